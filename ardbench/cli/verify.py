"""``ardbench verify`` and ``ardbench submit``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..errors import ConfigError
from .console import console, err_console
from .run import add_threads_argument

_STYLE = {"verified": "green", "partial": "yellow", "failed": "bold red"}


def add_verify_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="re-evaluate a record's own weights under its own protocol",
        description="Check a record: its weights' sha256, its data's fingerprint, then a "
        "re-evaluation on the same first n test points with the same seed and settings, column "
        "by column (clean/FGSM/PGD-20/CW exactly, AutoAttack within 0.5%% of the points). "
        "Writes <run_id>.verify.json beside the record (state: verified, partial or failed); "
        "exit status 1 when any record failed.",
    )
    p.add_argument("paths", nargs="*", metavar="RECORD_OR_RUN_DIR")
    p.add_argument(
        "--all", action="store_true", help="every record under --runs (default leaderboard/runs)"
    )
    p.add_argument("--runs", default="leaderboard/runs", help="records for --all")
    p.add_argument(
        "--newest-first",
        action="store_true",
        help="--all in the order git added the records, newest first (records git does not "
        "track yet before them): what a change adds is checked first",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="stop starting new checks after this many seconds and list the records not "
        "reached (a time-boxed CI check)",
    )
    p.add_argument(
        "--published-only",
        action="store_true",
        help="--all: skip records that name no published weights (listed as unverified, not "
        "failed: e.g. a retired protocol's records)",
    )
    p.add_argument("--columns", help="compare only these columns, e.g. clean,pgd20 (partial)")
    p.add_argument("--n", type=int, help="only the first N of the record's points (partial)")
    p.add_argument("--weights", help="the weights file to check (default: looked for)")
    p.add_argument("--download", action="store_true", help="fetch weights/data from their URL")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (torchvision layout)")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train the record's config again and judge the new run in seed std of the row",
    )
    p.add_argument("--retrain-runs", default="runs", help="where --retrain writes its run")
    p.add_argument("--no-write", action="store_true", help="print only; write no .verify.json")
    add_threads_argument(p)
    p.set_defaults(func=_cmd_verify)


def _targets(args: argparse.Namespace) -> list[Path]:
    from ..results.records import find_records

    if args.all == bool(args.paths):
        raise ConfigError("give RECORD or RUN_DIR paths, or --all (not both)")
    if args.all:
        found = list(find_records(args.runs))
        if args.published_only:
            skipped = [p for p, r in found if r.checkpoint.extra("weights") is None]
            for path in skipped:
                console.print(f"unverified {path.stem}: no published weights", highlight=False)
            found = [(p, r) for p, r in found if p not in skipped]
        paths = [path for path, _ in found]
        return _git_newest_first(paths) if args.newest_first else paths
    return [Path(p) for p in args.paths]


def _git_newest_first(paths: list[Path]) -> list[Path]:
    """``paths`` ordered by the commit that added each (newest first; untracked ones first,
    then by path): a record's commit order is the repository's, not a date it claims."""
    import subprocess

    if not paths:
        return paths
    root = paths[0].resolve().parent
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        log = subprocess.run(
            ["git", "-C", top, "log", "--diff-filter=A", "--name-only", "--format="],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return paths  # not a git checkout: the path order
    order: dict[Path, int] = {}
    for i, name in enumerate(line for line in log if line.strip()):
        order.setdefault((Path(top) / name).resolve(), i)
    return sorted(paths, key=lambda p: (order.get(p.resolve(), -1), str(p)))


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..results.verify import FAILED, verify_path
    from ..threads import set_threads

    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.retrain and (args.columns or args.n or args.weights):
        raise ConfigError(
            "--retrain trains and evaluates the whole run: drop --columns/--n/--weights"
        )
    set_threads(args.threads)
    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    failed = 0
    started = time.perf_counter()
    targets = _targets(args)
    for i, target in enumerate(targets):
        if args.budget is not None and time.perf_counter() - started > args.budget:
            rest = targets[i:]
            console.print(
                f"budget of {args.budget:g} s spent: {len(rest)} record(s) not checked: "
                + ", ".join(p.stem for p in rest),
                highlight=False,
                soft_wrap=True,
            )
            break
        if args.retrain:
            result = _retrain(target, args)
        else:
            _, result = verify_path(
                target,
                columns=columns,
                n=args.n,
                weights=args.weights,
                download=args.download,
                data_dir=args.data_dir,
                write=not args.no_write,
            )
        state = result["state"]
        failed += state == FAILED
        style = _STYLE.get(state, "")
        who = result.get("run_id", str(target))
        console.print(
            f"[{style}]{state}[/] {escape(who)}: {escape(result['note'])}",
            soft_wrap=True,
            highlight=False,
        )
        for line in result.get("warnings") or []:
            err_console.print(f"[yellow]warning[/]: {escape(line)}", soft_wrap=True)
    return 1 if failed else 0


def _retrain(target: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ..results.records import RECORD_FILENAME, load_record
    from ..results.retrain import retrain_record

    path = target / RECORD_FILENAME if target.is_dir() else target
    return retrain_record(
        load_record(path),
        path,
        runs_dir=args.retrain_runs,
        threads=args.threads,
        write=not args.no_write,
    )


def add_submit_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="pack runs for a leaderboard pull request (records, weights, method, logs)",
        description="Pack each run's record, its weights (sha256 checked against the record), "
        "its epoch log and, for a contrib method, the method's folder (source and recipes) into "
        "a new folder with a manifest of sha256s.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="a new folder")
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    from ..results.submit import make_bundle

    manifest = make_bundle(args.run_dirs, args.out)
    for rel in manifest["files"]:
        console.print(f"packed {Path(args.out) / rel}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(manifest['runs'])} run(s), {len(manifest['files'])} files in {args.out} "
        "(manifest.json lists their sha256s); next: ardbench leaderboard --add "
        f"{Path(args.out) / 'records'}/*.json",
        highlight=False,
        soft_wrap=True,
    )
    return 0
