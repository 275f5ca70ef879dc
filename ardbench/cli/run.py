"""``ardbench run``: train with a method and a recipe, evaluate, write the record."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ..errors import ConfigError
from ..eval.result import COLUMN_TITLES
from .console import console

if TYPE_CHECKING:  # pragma: no cover
    from ..results.schema import Record

# --------------------------------------------------------------------------------------- run


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="train a student with a method, evaluate it, write a record",
        description="Resolve a recipe (method + protocol + teacher + student), train, evaluate "
        "the checkpoint the protocol's rule reports, write runs/<run_id>/record.json. Every "
        "setting is validated before anything is written.",
    )
    p.add_argument("--method", help="method name (ardbench list methods)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="built-in recipe, e.g. demo (same as --recipe demo)")
    g.add_argument(
        "--recipe",
        help="a recipe name (ardbench list recipes: baselines/<method>/, baselines/common/) "
        "or a YAML path",
    )
    p.add_argument(
        "--protocol",
        help="a named protocol (ardbench list protocols); default: the recipe's, else the "
        "method's own faithful protocol, else standard-<dataset>",
    )
    add_data_arguments(p)
    p.add_argument(
        "--teacher",
        help="model spec: ARCH:PATH, PATH.safetensors, PATH.pt2, robustbench:ID, run:RUN_ID",
    )
    p.add_argument("--student", help="model spec (usually an architecture name)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    add_set_argument(
        p, "override any config key, e.g. train.lr=0.05, attack.eps=8/255, adv_weight=0.5"
    )
    p.add_argument("--runs", default="runs", help="directory of run directories (default ./runs)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run with its saved config (other settings may not be "
        "given, except --quiet and --runs)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse to train when the teacher check warns (train.teacher_check=strict): the "
        "teacher is more than 10 points less accurate on the students' inputs than on plain "
        "ones, or near chance",
    )
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="load .pt2 archives (teacher, student) without the safety checks; torch may then "
        "run code from them: only for archives from someone you trust",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log each epoch to RUN_DIR/tensorboard/ (needs: pip install tensorboard)",
    )
    add_threads_argument(p)
    add_force_argument(p)
    p.set_defaults(func=_cmd_run)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data-dir``, ``--download`` (run, check-teacher)."""
    p.add_argument("--dataset", help="digits | cifar10 | cifar100 | npz:PATH[+PATH]")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (torchvision layout)")
    p.add_argument("--download", action="store_true", help="allow downloading data/models")


def add_set_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    """``--set KEY=VALUE``, repeatable (run, sweep, check-teacher)."""
    p.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_force_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--force`` (run, eval, sweep): accept an implausible L∞ radius (above 32/255)."""
    p.add_argument(
        "--force",
        action="store_true",
        help="accept an L∞ eps above 32/255 (refused by default: 0.5 is usually 0.5/255 "
        "or 8/255 mistyped)",
    )


def add_threads_argument(p: argparse.ArgumentParser, default: str = "the physical cores") -> None:
    """``--threads N`` (run, eval, sweep): torch's CPU threads."""
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"torch CPU threads (default: $OMP_NUM_THREADS if set, else {default}; "
        "on a CPU shared with other jobs, fewer is often faster)",
    )


# flags that define a run: --resume takes the run's saved config, so giving one is a mistake
_RUN_SETTINGS = (
    "method",
    "preset",
    "recipe",
    "protocol",
    "dataset",
    "data_dir",
    "teacher",
    "student",
    "epochs",
    "seed",
    "device",
)


def _cmd_run(args: argparse.Namespace) -> int:
    from .. import api

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _RUN_SETTINGS if getattr(args, k) is not None]
        given += ["--set"] if args.sets else []
        given += ["--download"] if args.download else []
        given += ["--strict"] if args.strict else []
        if given:
            raise ConfigError(
                f"--resume continues a run with its own saved config; {', '.join(given)} "
                "would be ignored",
                hint="drop them, or start a new run",
            )
        with _interrupt_hint(args, Path(args.resume).parent, resuming=Path(args.resume)):
            run = api.resume(
                args.resume,
                progress=not args.quiet,
                threads=args.threads,
                tensorboard=args.tensorboard,
            )
    else:
        settings = {
            k: getattr(args, k)
            for k in ("dataset", "data_dir", "teacher", "student", "device", "epochs", "seed")
        }
        cfg = api.config(
            args.method,
            protocol=args.protocol,
            preset=args.preset,
            recipe=args.recipe,
            download=args.download,
            sets=[*args.sets, *(["train.teacher_check=strict"] if args.strict else [])],
            force=args.force,
            **settings,
        )
        if args.dry_run:
            console.print_json(json.dumps(cfg.to_dict()))
            return 0
        with _interrupt_hint(args, Path(args.runs)):
            run = api.train_config(
                cfg,
                runs=args.runs,
                progress=not args.quiet,
                threads=args.threads,
                tensorboard=args.tensorboard,
            )
    record = run.record
    if record:
        render_run_summary(record, run.directory)
    return 0


@contextlib.contextmanager
def _interrupt_hint(
    args: argparse.Namespace, runs_dir: Path, resuming: Path | None = None
) -> Iterator[None]:
    """On Ctrl-C, say what can be resumed: the run directory this call opened (found by
    comparing the runs folder before and after), and whether an epoch was checkpointed."""
    before = {p.name for p in runs_dir.iterdir()} if runs_dir.is_dir() else set()
    try:
        yield
    except KeyboardInterrupt:
        run_dir = resuming
        if run_dir is None and runs_dir.is_dir():
            new = [p for p in runs_dir.iterdir() if p.name not in before and p.is_dir()]
            run_dir = max(new, key=lambda p: p.stat().st_mtime) if new else None
        if run_dir is None:
            args.interrupt_hint = "nothing was written (the run had not started)"
        elif (run_dir / "record.json").is_file():
            args.interrupt_hint = f"the run had finished; its record is {run_dir / 'record.json'}"
        elif (run_dir / "checkpoint.pt").is_file():
            args.interrupt_hint = (
                f"the finished epochs are checkpointed; continue with "
                f"ardbench run --resume {run_dir}"
            )
        else:
            args.interrupt_hint = (
                f"no epoch had finished, so nothing is checkpointed; ardbench run --resume "
                f"{run_dir} starts it over (or delete {run_dir})"
            )
        raise


def render_run_summary(record: Record, run_dir: Path) -> None:
    """A short results table: the student, and the teacher's own figures when it has a record."""
    from ..protocols import format_eps
    from ..train.demo import teacher_record

    ev = record.eval
    columns = list(ev.accuracy)
    table = Table(title=f"ardbench run {record.run_id}")
    table.add_column("model")
    for col in columns:
        table.add_column(COLUMN_TITLES.get(col, col), justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("wall time", justify="right")
    trec = teacher_record(record.teacher.resolved) if record.teacher else None
    if trec:
        t = json.loads(trec.read_text())
        table.add_row(
            f"teacher ({t['method']['name']}, {t['student']['arch']})",
            *[_pct(t["eval"]["accuracy"].get(c)) for c in columns],
            str(t["epochs"]),
            f"{t['wall_time_s']:.0f}s",
        )
    table.add_row(
        f"student ({record.method.name}, {record.student.arch})",
        *[_pct(ev.column(c)) for c in columns],
        str(record.epochs),
        f"{record.wall_time_s:.0f}s",
    )
    console.print(table)
    console.print(
        f"{record.track.dataset}, {record.track.norm} eps {format_eps(record.track.eps)}, "
        f"n = {ev.n_examples} test points; record: {run_dir / 'record.json'}"
    )


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"
