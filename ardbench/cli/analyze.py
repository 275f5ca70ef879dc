"""``ardbench analyze variance-gap``: feature-variance gap against robust accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .console import console, err_console
from .run import add_threads_argument


def add_analyze_parser(sub: Any) -> None:
    p = sub.add_parser("analyze", help="analyses of finished runs (variance-gap)")
    inner = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    v = inner.add_parser(
        "variance-gap",
        help="student-teacher gap in penultimate-feature variance vs robust accuracy",
        description="For each run: Var(F) (mean over feature dimensions of the variance "
        "across test points, ddof 1) of the student's and the teacher's penultimate features "
        "on clean and on PGD-20 inputs (the evaluator's column at the run's eps, crafted "
        "against the student), overall and per class, and the student's robust accuracy on "
        "the same inputs. Teacher-free runs of the same track and student (given, or found "
        "beside the runs) are measured against the distillation runs' teacher. Writes "
        "variance_gap.csv, variance_gap_per_class.csv, variance_gap_fit.csv (line, Pearson r) "
        "and variance_gap.png.",
    )
    v.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or directories of runs")
    v.add_argument("--out", default="analysis", help="output directory (default ./analysis)")
    v.add_argument(
        "--n-examples",
        type=int,
        help="the first N test points (default: as many as each run's record was evaluated on)",
    )
    v.add_argument(
        "--baselines",
        nargs="*",
        metavar="DIR",
        help="where to look for teacher-free baselines (default: the runs' directories); "
        "give none (--baselines) to use only the runs named",
    )
    v.add_argument("--device", default="auto")
    v.add_argument("--batch-size", type=int, default=256)
    add_threads_argument(v)
    v.set_defaults(func=_cmd_variance_gap)


def _cmd_variance_gap(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..analyze import find_baselines, variance_gap
    from ..threads import set_threads
    from .plot import expand_runs

    set_threads(args.threads)
    runs = expand_runs(args.runs)
    search = (
        args.baselines
        if args.baselines is not None
        else sorted({str(r.directory.parent) for r in runs})
    )
    baselines = [b for b in find_baselines(runs, [Path(s) for s in search]) if b not in runs]

    def progress(run: Any) -> None:
        err_console.print(f"measuring {run.run_id}", highlight=False)

    paths = variance_gap(
        runs,
        args.out,
        baselines=baselines,
        n_examples=args.n_examples,
        device=args.device,
        batch_size=args.batch_size,
        progress=progress,
    )
    table = pd.read_csv(paths["table"])
    cols = [
        "run_id",
        "method",
        "teacher_free",
        "robust_acc",
        "gap_clean",
        "gap_adv",
        "dvar_student",
    ]
    console.print(table[cols].to_string(index=False), highlight=False, soft_wrap=True)
    fits = pd.read_csv(paths["fit"])
    console.print(fits.to_string(index=False), highlight=False, soft_wrap=True)
    for path in paths.values():
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return 0
