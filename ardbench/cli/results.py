"""``ardbench leaderboard`` and ``ardbench compare``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..errors import ConfigError
from .console import console, err_console

# ------------------------------------------------------------------------- leaderboard, compare


def add_leaderboard_parser(sub: Any) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="render the markdown leaderboards from run records",
        description="Collect every run record under --runs (record.json files and *.json "
        "records, recursively) and render one markdown table per (track, teacher, student) "
        "into --out, plus an index README.md. --check renders in memory and fails when a "
        "file differs, is missing or is stale.",
    )
    p.add_argument(
        "--runs",
        default="leaderboard/runs",
        help="directory of run records (default leaderboard/runs)",
    )
    p.add_argument("--out", default="leaderboard", help="output directory (default leaderboard)")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when any table is out of date"
    )
    p.add_argument(
        "--add",
        nargs="+",
        metavar="RUN_DIR_OR_RECORD",
        help="first copy these runs' records into --runs (checkpoints stay behind)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="--add without re-evaluating the records (they are marked unverified); by default "
        "each is re-evaluated first: clean/FGSM/PGD-20/CW on all its points (AutoAttack is "
        "left out, too slow on a CPU) and refused when a number, its weights or its data differ",
    )
    p.add_argument(
        "--replaces",
        nargs="+",
        metavar="RECORD",
        help="with --add: each added run is a re-run of this committed record (same method, "
        "seed, protocol, data, teacher, student), made because its weights were never "
        "published; the old record and what was filed beside it leave --runs, and the new "
        "one's verification says how far the re-run landed from it",
    )
    p.add_argument(
        "--attach",
        nargs="+",
        metavar="EVAL_JSON",
        help="file later evaluations (`ardbench eval run:RUN_ID ... --json E.json`) beside "
        "the records of the checkpoints they evaluated; the tables then show the columns the "
        "records lack (e.g. AA) from them",
    )
    p.set_defaults(func=_cmd_leaderboard)


def require_records_dir(folder: str, flag: str, out: str | None = None) -> None:
    """A missing records folder as one line: where ardbench looked and how to point it
    elsewhere (the default, leaderboard/runs, is relative to the working directory)."""
    from ..paths import baselines_dir

    where = Path(folder)
    if where.is_dir() or where.is_file():
        return
    hint = f"run from the checkout root, or pass {flag} DIR"
    root = baselines_dir()
    if root is not None and not where.is_absolute() and (root.parent / where).is_dir():
        more = f" --out {root.parent / out}" if out and not Path(out).is_absolute() else ""
        hint = (
            f"pass {flag} {root.parent / where}{more} (the checkout's), or run from {root.parent}"
        )
    raise ConfigError(
        f"no directory {folder} (looked in {where.resolve()}, relative to the working "
        f"directory {Path.cwd()})",
        hint=hint,
    )


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from ..io import remove_stale_tmp
    from ..results.leaderboard import check_leaderboard, write_leaderboard

    if (args.add or args.attach) and args.check:
        raise ConfigError("--add/--attach and --check do not go together")
    if args.replaces and not args.add:
        raise ConfigError("--replaces goes with --add (the re-runs that replace the records)")
    if args.check or not args.add:
        require_records_dir(args.runs, "--runs", args.out)
    if not args.check:  # what a killed earlier call left half-written
        for folder in (args.runs, args.out):
            remove_stale_tmp(folder, recursive=True)
    if args.add:
        from ..results.submit import add_verified

        if args.no_verify:
            err_console.print(
                "[bold red]WARNING: --no-verify: adding records WITHOUT re-evaluating them; "
                "they are marked unverified[/]",
                soft_wrap=True,
            )
        added = add_verified(
            args.add, args.runs, verify=not args.no_verify, replaces=args.replaces or ()
        )
        for dest, status, check in added:
            console.print(f"{status} ({check['state']}): {dest}", highlight=False, soft_wrap=True)
            if "replaces" in check:
                line = check["replaces"]["summary"]
                console.print(f"  {line}", highlight=False, soft_wrap=True)
    if args.attach:
        from ..results.later_eval import attach_later_evals

        for dest, status in attach_later_evals(args.attach, args.runs):
            console.print(f"{status}: {dest}", highlight=False, soft_wrap=True)
    if args.check:
        problems = check_leaderboard(args.runs, args.out)
        if problems:
            for line in problems:
                err_console.print(line, highlight=False, soft_wrap=True)
            err_console.print(
                f"[red]{len(problems)} leaderboard file(s) out of date[/]: run "
                f"`ardbench leaderboard --runs {args.runs} --out {args.out}` and commit the result",
                soft_wrap=True,
            )
            return 1
        console.print(
            f"leaderboard in {args.out} is up to date with the records in {args.runs}",
            highlight=False,
            soft_wrap=True,
        )
        return 0
    report = write_leaderboard(args.runs, args.out)
    from ..plots import draw_table_plots
    from ..results.generated import prune_empty_dirs
    from ..results.leaderboard import collect_records

    # each table's scatter beside it (the markdown links it whether or not it is drawn)
    report["written"] += draw_table_plots(
        collect_records(args.runs), args.out, removed=report["removed"]
    )
    prune_empty_dirs(Path(args.out), report["removed"])  # the plots of removed tables went too
    for rel in report["written"]:
        console.print(f"wrote {Path(args.out) / rel}", highlight=False, soft_wrap=True)
    for rel in report["removed"]:
        console.print(f"removed stale {Path(args.out) / rel}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(report['written'])} written, {len(report['unchanged'])} unchanged, "
        f"{len(report['removed'])} removed",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def add_compare_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="a run or method against its leaderboard table",
        description="Deltas (percentage points) of a run, or of a method's aggregate over "
        "seeds, against every row of its (track, teacher, student) table, flagging those "
        "inside seed noise.",
    )
    p.add_argument(
        "target",
        nargs="?",
        metavar="RUN_DIR_OR_RECORD",
        help="a run directory or record file; with --method, a directory of runs "
        "whose runs of that method are aggregated",
    )
    p.add_argument("--method", help="compare this method's aggregate instead of one run")
    p.add_argument("--pair", help="only this table: <track-slug>/<teacher-slug>__<student>")
    p.add_argument(
        "--records",
        dest="records",
        metavar="DIR",
        default="leaderboard/runs",
        help="the records to compare against: a directory searched recursively for run "
        "records (default leaderboard/runs; a directory of run directories works too)",
    )
    # the old names: --leaderboard took the records directory, not the tables' directory
    p.add_argument("--leaderboard-runs", "--leaderboard", dest="records", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_compare)


def _modified_note(target: str) -> str | None:
    """When the run followed a modified protocol: which, what it changed, and how to compare
    it anyway (the leaderboard's tables are per protocol, so it has no rows for it)."""
    from ..errors import ArdbenchError
    from ..protocols import PROTOCOLS, protocol_changes
    from ..results.grouping import record_protocol
    from ..results.records import load_record

    try:
        record = load_record(target)
        key = record_protocol(record)
    except (ArdbenchError, OSError, KeyError, TypeError, ValueError):
        return None
    if not key.modified:
        return None
    changed = ""
    if key.name in PROTOCOLS.names() and isinstance(record.get("config"), dict):
        try:
            diffs = protocol_changes(
                record["config"], PROTOCOLS.get(key.name), record["track"]["data_fingerprint"]
            )
        except (ArdbenchError, KeyError, TypeError, ValueError):
            diffs = []
        shown = [f"{k} = {mine} (registered {theirs})" for k, mine, theirs in diffs[:4]]
        changed = f" ({'; '.join(shown)})" if shown else ""
    return (
        f"Run {record['run_id']} followed a modified protocol, {key.label}: {key.name} with "
        f"changes{changed}; the leaderboard compares runs of one protocol only. To compare "
        f"anyway, compare with runs of the same changes (--records runs after running other "
        f"methods with the same settings), or rerun with the registered protocol {key.name} "
        f"(without the changes)."
    )


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..results.compare import NoTableError, compare_method, compare_record, render_comparison
    from ..results.leaderboard import collect_records
    from ..results.records import load_record

    require_records_dir(args.records, "--records")
    leaderboard = collect_records(args.records)
    try:
        if args.method:
            candidates = None
            if args.target:
                target = Path(args.target)
                candidates = (
                    [load_record(target)]
                    if target.is_file() or (target / "record.json").is_file()
                    else collect_records(target)
                )
            comparisons = compare_method(
                args.method, leaderboard, candidates=candidates, pair=args.pair
            )
        elif args.target:
            comparisons = [compare_record(load_record(args.target), leaderboard)]
        else:
            raise ConfigError("compare needs a run directory / record, or --method NAME")
    except NoTableError as exc:
        note = _modified_note(args.target) if args.target and not args.method else None
        err_console.print(
            f"[yellow]nothing to compare:[/] {exc}."
            + (f" {escape(note)}" if note else "")
            + " Hint: compare with other records by "
            f"--records DIR (now {args.records}; e.g. --records runs), or add runs to the "
            "leaderboard first (ardbench leaderboard --add RUN_DIR ...)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    for comp in comparisons:
        render_comparison(comp, console)
    return 0
