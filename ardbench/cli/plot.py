"""``ardbench plot``: training curves of runs, or a leaderboard table's clean-vs-AA scatter."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ArdbenchError
from .console import console


def add_plot_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plot",
        help="training curves of runs, or a leaderboard table's clean vs AA scatter (PNG + CSV)",
        description="RUN...: one panel per loss term and per probe accuracy (clean, PGD-10 "
        "on the probe points) by epoch; runs of one recipe that differ only by seed are drawn "
        "as mean ± std. --table PAIR: clean vs AutoAttack (else PGD-20) accuracy of the "
        "table's rows with seed error bars. Each PNG is written beside the CSV it draws.",
    )
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="run directories, or directories holding runs (a runs/ or sweep directory)",
    )
    p.add_argument(
        "--table",
        metavar="PAIR",
        help="a table <track-slug>/<teacher-slug>__<student> (as `ardbench compare --pair`)",
    )
    p.add_argument(
        "--records",
        default="leaderboard/runs",
        metavar="DIR",
        help="--table: the records its table is built from (default leaderboard/runs)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write (default: RUN's directory for one run, else ./plots; --table: "
        "./leaderboard, beside the table's markdown)",
    )
    p.add_argument("--name", default="curves", help="file name of the curves (default curves)")
    p.set_defaults(func=_cmd_plot)


def expand_runs(paths: list[str]) -> list[Any]:
    """Run directories named, or found (``*/config.json``, recursively) under directories."""
    from ..rundir import CONFIG, Run

    runs: list[Run] = []
    for text in paths:
        path = Path(text)
        if (path / CONFIG).is_file() or path.name == CONFIG:
            runs.append(Run(path))
            continue
        if not path.is_dir():
            raise ArdbenchError(f"{path} is neither a run directory nor a directory of runs")
        found = [
            Run(c.parent)
            for c in sorted(path.rglob(CONFIG))
            if not any(part.startswith(".") for part in c.relative_to(path).parts)
        ]
        if not found:
            raise ArdbenchError(f"no run directories under {path} (no */{CONFIG})")
        runs += found
    return list(dict.fromkeys(runs))


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..plots import plot_curves, plot_table, scatter_paths

    if args.table and args.runs:
        raise ArdbenchError("give runs or --table, not both")
    if args.table:
        from ..results.leaderboard import collect_records
        from ..results.tables import build_tables

        wanted = args.table.strip().removesuffix(".md").strip("/")
        tables = build_tables(collect_records(args.records))
        match = [t for t in tables if t.name == wanted or t.name.endswith("/" + wanted)]
        if len(match) != 1:
            known = ", ".join(t.name for t in tables) or "none"
            raise ArdbenchError(
                f"{'no' if not match else 'more than one'} table {wanted!r} in {args.records}",
                hint=f"tables: {known}",
            )
        table = match[0]
        out = Path(args.out or "leaderboard")
        png_rel, csv_rel = scatter_paths(table.relpath)
        png, csv = plot_table(table, out / png_rel, out / csv_rel)
    else:
        if not args.runs:
            raise ArdbenchError("nothing to plot", hint="give RUN directories or --table PAIR")
        runs = expand_runs(args.runs)
        out = (
            Path(args.out) if args.out else (runs[0].directory if len(runs) == 1 else Path("plots"))
        )
        png, csv = plot_curves(runs, out, name=args.name)
        console.print(f"{len(runs)} run(s)", highlight=False)
    console.print(f"wrote {png}\nwrote {csv}", highlight=False, soft_wrap=True)
    return 0
