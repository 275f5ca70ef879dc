"""``ardbench eval``: a model against the evaluator's columns."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..errors import ConfigError
from ..eval.settings import DEFAULT_ATTACKS, EvalSpec, SettingError
from ..protocols.columns import COLUMNS
from .console import console, err_console
from .run import add_force_argument, add_threads_argument

# -------------------------------------------------------------------------------------- eval


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model: clean, FGSM, PGD-20, CW, AutoAttack",
        description="Evaluate MODEL_SPEC on the first N test points of --dataset: clean, FGSM, "
        "PGD-20 and CW-inf (step eps/4) and AutoAttack standard (pyautoattack), after the "
        "compliance checks (eval mode, fp32, inputs in [0,1], logits, deterministic forward, "
        "non-zero input gradients).",
    )
    p.add_argument(
        "model",
        metavar="MODEL_SPEC",
        help="ARCH:PATH, PATH.pt2, robustbench:ID, run:RUN_ID or demo | demo_natural",
    )
    p.add_argument("--dataset", required=True, help="digits | cifar10 | cifar100 | npz:PATH")
    p.add_argument("--data-dir", help="where cifar10/cifar100 live (torchvision layout)")
    p.add_argument("--download", action="store_true", help="allow downloading data/models")
    p.add_argument("--model-dir", help="RobustBench model directory (robustbench:ID specs)")
    p.add_argument("--runs", default="runs", help="directory of run directories (run:RUN_ID)")
    _add_settings(p)
    _add_outputs(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="load a .pt2 archive without the safety checks; torch may then run code from it: "
        "only for archives from someone you trust",
    )
    add_force_argument(p)
    add_threads_argument(p)
    p.set_defaults(func=_cmd_eval)


def _add_settings(p: argparse.ArgumentParser) -> None:
    """The evaluation's settings: the fields of an EvalSpec."""
    p.add_argument("--norm", default="Linf", choices=["Linf", "L2"])
    p.add_argument("--eps", default="8/255", help="radius, 8/255 or a float (default 8/255)")
    p.add_argument("--n-examples", type=int, help="the first N test points (default: all)")
    p.add_argument(
        "--attacks",
        default=",".join(DEFAULT_ATTACKS),
        help=f"comma-separated registered columns among {','.join(COLUMNS)} "
        f"(default: {','.join(DEFAULT_ATTACKS)})",
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
    p.add_argument(
        "--compliant",
        action="store_true",
        help="stop when a compliance check fails (default: warn and go on)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        help="points per saved chunk (default 1000 with --state-dir, else all)",
    )


def _add_outputs(p: argparse.ArgumentParser) -> None:
    """What is written besides the table: JSON, model_info, the cross-check, the state."""
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
        "--cross-check",
        choices=["robustbench"],
        help="also run robustbench.eval.benchmark() on the same model and points",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="save per-point progress in chunks here; rerun the same command to resume",
    )


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


def _check_settings(args: argparse.Namespace) -> EvalSpec:
    """Every setting checked before the model or the data is touched: the evaluation's once,
    as the :class:`EvalSpec` the evaluator takes, and where the outputs go."""
    from ..device import check_device
    from ..io import remove_stale_tmp
    from ..protocols.eps_check import check_eps_plausible
    from ..protocols.sections import check_seed

    check_seed("--seed", args.seed)  # 64 bits, before EvalSpec's own range checks
    try:
        spec = EvalSpec.create(
            attacks=args.attacks,
            eps=args.eps,
            norm=args.norm,
            seed=args.seed,
            batch_size=args.batch_size,
            aa_batch_size=args.aa_batch_size,
            chunk_size=args.chunk_size,
            n_examples=args.n_examples,
            compliant=args.compliant,
        )
    except SettingError as exc:  # in the flag's words: "--n-examples must be >= 1, got 0"
        flag = "--" + exc.setting.replace("_", "-")
        raise ConfigError(f"{flag} {exc.detail}", hint=exc.hint) from None
    check_eps_plausible(args.norm, args.eps, force=args.force, key="--eps")
    check_device(args.device)
    for flag, out in (("--json", args.json_out), ("--model-info", args.model_info_out)):
        if out and (Path(out).is_dir() or Path(out).parent.is_file()):
            raise ConfigError(f"{flag} {out}: cannot write a file there", hint="give a file path")
        if out:  # the temporary file of a killed earlier write of the same output
            remove_stale_tmp(Path(out).parent, name=Path(out).name)
    if args.state_dir:
        state = Path(args.state_dir)
        if state.exists() and not state.is_dir():
            raise ConfigError(f"--state-dir {state} is a file", hint="give a directory")
        remove_stale_tmp(state)  # what a killed evaluation left half-written
    return spec


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..eval import ComplianceError, evaluate_spec, render_eval
    from ..threads import set_threads

    spec = _check_settings(args)
    set_threads(args.threads)
    metadata: dict[str, Any] = {}
    for item in args.info:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--info expects KEY=VALUE, got {item!r}")
        v: Any = value
        if key.strip() == "additional_data":
            v = value.strip().lower() in ("1", "true", "yes")
        metadata[key.strip()] = v
    try:
        result = evaluate_spec(
            args.model,
            args.dataset,
            spec,
            data_dir=args.data_dir,
            download=args.download,
            device=args.device,
            json_out=args.json_out,
            model_info_out=args.model_info_out,
            cross_check=args.cross_check,
            state_dir=args.state_dir,
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
            f"the finished chunks are saved in {args.state_dir}; rerun the same command to continue"
            if args.state_dir
            else "nothing was saved: without --state-dir an evaluation cannot be resumed "
            "(pass --state-dir DIR to make it resumable)"
        )
        err_console.print(
            f"[yellow]interrupted[/]: {escape(hint)}", soft_wrap=True, highlight=False
        )
        return 130
    render_eval(result, console)
    for flag, path in (("--json", args.json_out), ("--model-info", args.model_info_out)):
        if path:
            console.print(f"{flag}: wrote {path}")
    return 0
