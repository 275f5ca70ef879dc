"""``ardbench site``: the static leaderboard website."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .console import console


def add_site_parser(sub: Any) -> None:
    p = sub.add_parser(
        "site",
        help="build the leaderboard as a static website (offline, byte-stable)",
        description="Render the run records under --runs (and the runs' log.jsonl where "
        "found) as a static site in --out: an index with filters, one page per table, run "
        "and method, and downloads. Open OUT/index.html in a browser, or publish the folder "
        "(e.g. GitHub Pages). Two builds of the same records are byte-identical.",
    )
    p.add_argument(
        "--runs",
        default="leaderboard/runs",
        help="directory of run records (default leaderboard/runs)",
    )
    p.add_argument("--out", default="site", help="output folder (default site)")
    p.add_argument(
        "--logs",
        nargs="+",
        default=[],
        metavar="RUNS_DIR",
        help="folders holding run directories (<run_id>/log.jsonl) for the training curves",
    )
    p.set_defaults(func=_cmd_site)


def _cmd_site(args: argparse.Namespace) -> int:
    from ..site import build_site

    start = time.perf_counter()
    report = build_site(args.runs, args.out, tuple(args.logs))
    console.print(
        f"site in {args.out}: {report.pages} pages ({report.tables} tables, {report.runs} runs); "
        f"{report.written} files written, {report.unchanged} unchanged, {report.removed} removed "
        f"in {time.perf_counter() - start:.1f} s; open {Path(args.out) / 'index.html'}",
        highlight=False,
        soft_wrap=True,
    )
    return 0
