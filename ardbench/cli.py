"""Command line: thin argparse layer; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import __version__
from .eval.result import COLUMN_TITLES
from .protocols.config import ConfigError
from .registry import UnknownNameError

console = Console()
err_console = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UnknownNameError, FileNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: the last finished epoch is checkpointed; "
            "continue with --resume RUN_DIR"
        )
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ardbench",
        description="Benchmark for adversarially robust knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"ardbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_parser(sub)
    _add_list_parser(sub)
    _add_check_parser(sub)
    _add_eval_parser(sub)
    _add_leaderboard_parser(sub)
    _add_compare_parser(sub)
    return parser


# --------------------------------------------------------------------------------------- run


def _add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="train a student with a method, evaluate it, write a record")
    p.add_argument("--method", help="method name (ardbench list methods)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="built-in preset, e.g. demo")
    g.add_argument("--recipe", help="recipe name under baselines/<method>/ or a YAML path")
    p.add_argument("--dataset", help="digits | cifar10 | cifar100 | npz:PATH[+PATH]")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (torchvision layout)")
    p.add_argument("--download", action="store_true", help="allow downloading data/models")
    p.add_argument("--teacher", help="model spec: ARCH:PATH, PATH.pt2, robustbench:ID, run:RUN_ID")
    p.add_argument("--student", help="model spec (usually an architecture name)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. train.lr=0.05, attack.eps=8/255, adv_weight=0.5",
    )
    p.add_argument("--runs", default="runs", help="directory of run directories (default ./runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from .train.trainer import resume, train

    if args.resume:
        result = resume(args.resume, progress=not args.quiet)
    else:
        from .recipes import resolve_config

        cli: dict[str, Any] = {}
        for key in ("dataset", "data_dir", "teacher", "student", "device"):
            if getattr(args, key) is not None:
                cli[key] = getattr(args, key)
        if args.download:
            cli["download"] = True
        train_layer = {}
        if args.epochs is not None:
            train_layer["epochs"] = args.epochs
        if args.seed is not None:
            train_layer["seed"] = args.seed
        if train_layer:
            cli["train"] = train_layer
        cfg = resolve_config(
            args.method, preset=args.preset, recipe=args.recipe, cli=cli, sets=args.sets
        )
        if args.dry_run:
            console.print_json(json.dumps(cfg.to_dict()))
            return 0
        result = train(cfg, runs_dir=args.runs, progress=not args.quiet)
    if result.record:
        render_run_summary(result.record, result.run_dir)
    return 0


def render_run_summary(record: dict[str, Any], run_dir: Path) -> None:
    """A short results table: the student, and the teacher's own figures when it has a record."""
    from .train.demo import teacher_record

    eval_block = record["eval"]
    columns = list(eval_block["accuracy"])
    table = Table(title=f"ardbench run {record['run_id']}")
    table.add_column("model")
    for col in columns:
        table.add_column(COLUMN_TITLES.get(col, col), justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("wall time", justify="right")
    teacher = record.get("teacher")
    trec = teacher_record(teacher.get("resolved")) if teacher else None
    if trec:
        t = json.loads(trec.read_text())
        table.add_row(
            f"teacher ({t['method']['name']}, {t['student']['arch']})",
            *[_pct(t["eval"]["accuracy"].get(c)) for c in columns],
            str(t["epochs"]),
            f"{t['wall_time_s']:.0f}s",
        )
    table.add_row(
        f"student ({record['method']['name']}, {record['student']['arch']})",
        *[_pct(eval_block["accuracy"][c]) for c in columns],
        str(record["epochs"]),
        f"{record['wall_time_s']:.0f}s",
    )
    console.print(table)
    eps = record["track"]["eps"]
    from .protocols.config import format_eps

    console.print(
        f"{record['track']['dataset']}, {record['track']['norm']} eps {format_eps(eps)}, "
        f"n = {eval_block['n_examples']} test points; record: {run_dir / 'record.json'}"
    )


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


# -------------------------------------------------------------------------------------- list


def _add_list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list methods, models, datasets or recipes")
    p.add_argument("what", choices=["methods", "models", "datasets", "recipes"])
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from .methods import METHODS

        table = Table("method", "paper", "teacher", "notes")
        for name in METHODS.names():
            cls = METHODS.get(name)
            notes = []
            if cls.teacher_in_attack:
                notes.append("teacher in attack")
            if cls.unofficial:
                notes.append("unofficial re-implementation")
            table.add_row(name, cls.paper, "yes" if cls.needs_teacher else "no", ", ".join(notes))
        console.print(table)
    elif args.what == "models":
        from .models import ARCHS, build_arch, count_parameters

        table = Table("architecture", "parameters (10 classes)")
        for name in ARCHS.names():
            table.add_row(name, f"{count_parameters(build_arch(name, 10)):,}")
        console.print(table)
        console.print("Model specs: ARCH, ARCH:PATH, PATH.pt2, robustbench:ID, run:RUN_ID")
    elif args.what == "datasets":
        from .data import DATASETS

        table = Table("dataset", "description")
        for name in DATASETS.names():
            table.add_row(name, getattr(DATASETS.get(name), "description", ""))
        table.add_row("npz:PATH[+PATH]", "arrays x_train, y_train, x_test, y_test from .npz files")
        console.print(table)
    else:
        from .recipes import PRESETS, list_recipes

        table = Table("method", "recipe", "path")
        for name in PRESETS:
            table.add_row("(any)", f"--preset {name}", "built in")
        for method, name, path in list_recipes():
            table.add_row(method, name, str(path))
        console.print(table)
    return 0


# ------------------------------------------------------------------------------------- check


def _add_check_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="run the method contract tests on tiny models (CPU, seconds)")
    p.add_argument("--method", required=True)
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from .train.check import run_contract_checks

    results = run_contract_checks(args.method)
    table = Table("check", "result", "detail")
    for r in results:
        table.add_row(r.name, "[green]pass[/]" if r.passed else "[red]FAIL[/]", r.detail)
    console.print(table)
    failed = [r for r in results if not r.passed]
    if failed:
        err_console.print(f"[red]{len(failed)} of {len(results)} checks failed[/]")
        return 1
    console.print(f"[green]{args.method}: all {len(results)} contract checks passed[/]")
    return 0


# -------------------------------------------------------------------------------------- eval


def _add_eval_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model: clean, FGSM, PGD-20, CW, AutoAttack",
        description="Evaluate MODEL_SPEC on the first N test points of --dataset: clean, FGSM, "
        "PGD-20 and CW-inf (step eps/4) and AutoAttack standard (pyautoattack), after the "
        "compliance checks (eval mode, fp32, inputs in [0,1], logits, deterministic forward, "
        "non-zero input gradients).",
    )
    p.add_argument(
        "model", metavar="MODEL_SPEC", help="ARCH:PATH, PATH.pt2, robustbench:ID or run:RUN_ID"
    )
    p.add_argument("--dataset", required=True, help="digits | cifar10 | cifar100 | npz:PATH")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (torchvision layout)")
    p.add_argument("--download", action="store_true", help="allow downloading data/models")
    p.add_argument("--model-dir", help="RobustBench model directory (robustbench:ID specs)")
    p.add_argument("--runs", default="runs", help="directory of run directories (run:RUN_ID)")
    p.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    p.add_argument("--eps", default="8/255", help="radius, 8/255 or a float (default 8/255)")
    p.add_argument("--n-examples", type=int, help="the first N test points (default: all)")
    p.add_argument(
        "--attacks",
        default="clean,fgsm,pgd20,cw,aa",
        help="comma-separated columns among clean,fgsm,pgd20,cw,aa (default: all)",
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        help="clean/FGSM/PGD/CW batch: auto (default: 256 on CPU, fitted to GPU memory on CUDA) "
        "or N; it changes only the speed (random starts are drawn per point)",
    )
    p.add_argument(
        "--aa-batch-size",
        type=int,
        default=256,
        help="AutoAttack's batch size (default 256); part of the result: AutoAttack's random "
        "inits depend on the batch composition",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the result as JSON")
    p.add_argument(
        "--model-info",
        dest="model_info_out",
        metavar="OUT",
        help="write a RobustBench model_info JSON (needs the aa column)",
    )
    p.add_argument(
        "--info",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model_info field, e.g. name=..., authors=..., venue=..., link=..., "
        "architecture=ResNet-18, reported=57.12, additional_data=false, footnote=...",
    )
    p.add_argument(
        "--compliant",
        action="store_true",
        help="stop when a compliance check fails (default: warn and go on)",
    )
    p.add_argument(
        "--cross-check",
        choices=["robustbench"],
        help="also run robustbench.eval.benchmark() on the same model and points",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="save per-point progress in chunks here; rerun the same command to resume",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        help="points per saved chunk (default 1000 with --state-dir, else all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_eval)


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a positive integer, got {text!r}")
    return value


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import ComplianceError, evaluate_spec, render_eval

    metadata: dict[str, Any] = {}
    for item in args.info:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--info expects KEY=VALUE, got {item!r}")
        v: Any = value
        if key.strip() == "additional_data":
            v = value.strip().lower() in ("1", "true", "yes")
        metadata[key.strip()] = v
    try:
        result = evaluate_spec(
            args.model,
            args.dataset,
            data_dir=args.data_dir,
            download=args.download,
            n_examples=args.n_examples,
            attacks=args.attacks,
            eps=args.eps,
            norm=args.norm,
            batch_size=args.batch_size,
            aa_batch_size=args.aa_batch_size,
            seed=args.seed,
            device=args.device,
            json_out=args.json_out,
            model_info_out=args.model_info_out,
            compliant=args.compliant,
            cross_check=args.cross_check,
            state_dir=args.state_dir,
            chunk_size=args.chunk_size,
            model_dir=args.model_dir,
            runs_dir=args.runs,
            metadata=metadata or None,
            progress=not args.quiet,
            console=err_console,
        )
    except ComplianceError as exc:
        err_console.print(f"[bold red]compliance:[/] {exc}")
        return 3
    except KeyboardInterrupt:
        hint = (
            "finished chunks are saved; rerun the same command to continue"
            if args.state_dir
            else "pass --state-dir DIR to make long evaluations resumable"
        )
        err_console.print(f"[yellow]interrupted[/]: {hint}")
        return 130
    render_eval(result, console)
    for flag, path in (("--json", args.json_out), ("--model-info", args.model_info_out)):
        if path:
            console.print(f"{flag}: wrote {path}")
    return 0


# ------------------------------------------------------------------------- leaderboard, compare


def _add_leaderboard_parser(sub: Any) -> None:
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
        "--attach",
        nargs="+",
        metavar="EVAL_JSON",
        help="file later evaluations (`ardbench eval run:RUN_ID ... --json E.json`) beside "
        "the records of the checkpoints they evaluated; the tables then show the columns the "
        "records lack (e.g. AA) from them",
    )
    p.set_defaults(func=_cmd_leaderboard)


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from .results.leaderboard import add_records, check_leaderboard, write_leaderboard

    if (args.add or args.attach) and args.check:
        err_console.print("[bold red]error:[/] --add/--attach and --check do not go together")
        return 2
    if args.add:
        for dest, status in add_records(args.add, args.runs):
            console.print(f"{status}: {dest}", highlight=False, soft_wrap=True)
    if args.attach:
        from .results.later_eval import attach_later_evals

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


def _add_compare_parser(sub: Any) -> None:
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
        "--leaderboard-runs",
        "--leaderboard",
        dest="leaderboard_runs",
        default="leaderboard/runs",
        help="the leaderboard's records (default leaderboard/runs)",
    )
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .results.compare import NoTableError, compare_method, compare_record, render_comparison
    from .results.leaderboard import collect_records
    from .results.records import load_record

    leaderboard = collect_records(args.leaderboard_runs)
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
            err_console.print("[bold red]error:[/] give a run directory / record, or --method NAME")
            return 2
    except NoTableError as exc:
        err_console.print(f"[yellow]nothing to compare:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    for comp in comparisons:
        render_comparison(comp, console)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
