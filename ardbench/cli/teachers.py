"""``ardbench list teachers``: the teachers cached here and how to provide the others."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from .console import console
from .run import add_data_arguments, add_set_argument


def _line(text: str) -> None:
    # specs hold colons and brackets: no markup, no emoji codes (":id:")
    console.print(Text(text), highlight=False, soft_wrap=True, emoji=False)


def render_teachers(runs: str, model_dir: str | None) -> None:
    from ..models import default_model_dir
    from ..paths import cache_dir
    from ..teachers import cached_teachers, recipe_teachers, robustbench_path

    root = Path(model_dir).expanduser() if model_dir else default_model_dir()
    found = cached_teachers(Path(runs), root)
    table = Table(title="teachers cached on this machine")
    table.add_column("--teacher", overflow="fold")
    table.add_column("kind")
    table.add_column("detail")
    table.add_column("where", overflow="fold")
    for t in found:
        table.add_row(Text(t.spec), t.kind, Text(t.detail), Text(str(t.path)))
    if not any(t.kind == "demo" for t in found):
        where = Text(str(cache_dir() / "demo"))
        table.add_row("demo", "demo", "not trained yet: trained on first use", where)
    console.print(table)
    needed = recipe_teachers()
    if needed:
        _line("RobustBench teachers named by the recipes:")
        for (model_id, dataset), recipes in needed.items():
            path = robustbench_path(model_id, dataset, root)
            state = "present" if path.is_file() else "missing"
            # the recipes for any method first: they name a teacher every method may use
            recipes = sorted(recipes, key=lambda r: not r.startswith("(any)/"))
            more = f" and {len(recipes) - 3} more" if len(recipes) > 3 else ""
            shown = ", ".join(recipes[:3]) + more
            _line(f"  robustbench:{model_id} ({dataset}): {state} at {path} — recipes {shown}")
    _line(
        "Offline use of robustbench:ID: put the checkpoint at <model dir>/<dataset>/Linf/<ID>.pt "
        f"(RobustBench's own layout; model dir = $ARDBENCH_MODEL_DIR, else "
        f"$ARDBENCH_CACHE/robustbench, else ~/.cache/ardbench/robustbench; here {root}). For "
        "the standard recipes' "
        "robustbench:Zhang2019Theoretically that is "
        f"{robustbench_path('Zhang2019Theoretically', 'cifar10', root)}. On a machine with "
        "network, --download fetches it to that path, e.g. `ardbench eval "
        "robustbench:Zhang2019Theoretically --dataset cifar10 --attacks clean --n-examples 10 "
        "--download`; copy the file to the same path on the offline machine. A finished run "
        "of yours is a teacher too: --teacher run:RUN_ID (runs in --runs, default runs/)."
    )


def add_check_teacher_parser(sub) -> None:
    p = sub.add_parser(
        "check-teacher",
        help="a teacher's accuracy on the inputs the students would see (before training)",
        description="The teacher check every run with a teacher does before training, alone: "
        "the teacher's accuracy on up to N training inputs augmented as the protocol feeds "
        "them to the students, on the same inputs unaugmented, and on the first N test points. "
        "Warns when the augmented figure is more than 10 points under the unaugmented one or "
        "any figure is near chance (--strict: exit 1).",
    )
    p.add_argument("teacher", metavar="SPEC", help="model spec (as --teacher of ardbench run)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--protocol", help="a named protocol (ardbench list protocols)")
    g.add_argument("--recipe", help="a recipe name or YAML path (its protocol and data)")
    p.add_argument("--method", help="pick the method's faithful protocol (default: standard)")
    add_data_arguments(p)
    p.add_argument("--device", help="auto (default), cpu, cuda, ...")
    add_set_argument(p, "override a key, e.g. train.crop=reflect, train.flip=false, train.seed=1")
    p.add_argument("-n", type=int, default=2048, help="points per figure (default 2048)")
    p.add_argument("--runs", default="runs", help="where run:RUN_ID teachers live")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when the check warns")
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="load a .pt2 archive without the safety checks (only archives you trust)",
    )
    p.set_defaults(func=_cmd_check_teacher)


def _cmd_check_teacher(args) -> int:
    from .. import api
    from ..io import write_json_atomic
    from ..train.teacher_check import MAX_AUGMENT_DROP

    settings = {k: getattr(args, k) for k in ("dataset", "data_dir", "device")}
    check = api.check_teacher(
        args.teacher,
        method=args.method,
        protocol=args.protocol,
        recipe=args.recipe,
        n=args.n,
        runs=args.runs,
        download=args.download,
        sets=args.sets,
        **{k: v for k, v in settings.items() if v is not None},
    )
    table = Table(title=f"teacher check: {args.teacher}")
    table.add_column("inputs")
    table.add_column("points", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_row(
        f"as the students see them ({check.augmentation})",
        str(check.n_train),
        f"{check.augmented:.2f}%",
    )
    table.add_row("the same, unaugmented", str(check.n_train), f"{check.unaugmented:.2f}%")
    if check.test is not None:
        table.add_row("test points", str(check.n_test), f"{check.test:.2f}%")
    console.print(table)
    for warning in check.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"))
    if not check.warnings:
        _line(
            f"ok: within {MAX_AUGMENT_DROP:g} points of unaugmented, all above twice chance "
            f"({check.chance:.1f} %)"
        )
    if args.json:
        write_json_atomic(Path(args.json), {"teacher": args.teacher, **check.to_dict()})
        _line(f"wrote {args.json}")
    return 1 if (args.strict and check.warnings) else 0
