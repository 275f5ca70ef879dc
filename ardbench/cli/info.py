"""``ardbench list`` and ``ardbench check``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from .console import console, err_console

# -------------------------------------------------------------------------------------- list


def add_list_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="list methods, protocols, recipes, models, datasets or teachers"
    )
    p.add_argument(
        "what", choices=["methods", "protocols", "recipes", "models", "datasets", "teachers"]
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="protocols: print these in full (JSON)")
    p.add_argument("--runs", default="runs", help="teachers: the runs directory (default runs)")
    p.add_argument(
        "--model-dir",
        help="teachers: the RobustBench model directory (default: $ARDBENCH_MODEL_DIR, else "
        "$ARDBENCH_CACHE/robustbench, ARDBENCH_CACHE defaulting to ~/.cache/ardbench: where "
        "ardbench run looks)",
    )
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from ..methods import METHODS

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
        from ..models import ARCHS, build_arch, count_parameters

        table = Table("architecture", "parameters (10 classes)")
        for name in ARCHS.names():
            table.add_row(name, f"{count_parameters(build_arch(name, 10)):,}")
        console.print(table)
        console.print("Model specs: ARCH, ARCH:PATH, PATH.pt2, robustbench:ID, run:RUN_ID")
    elif args.what == "datasets":
        from ..data import DATASETS

        table = Table("dataset", "description")
        for name in DATASETS.names():
            table.add_row(name, getattr(DATASETS.get(name), "description", ""))
        table.add_row("npz:PATH[+PATH]", "arrays x_train, y_train, x_test, y_test from .npz files")
        console.print(table)
    elif args.what == "teachers":
        from .teachers import render_teachers

        render_teachers(args.runs, args.model_dir)
    elif args.what == "protocols":
        from ..protocols import all_protocols, get_protocol

        if args.names:
            for name in args.names:
                console.print_json(json.dumps(get_protocol(name).to_dict()))
            return 0
        table = Table("protocol", "kind", "method", "eps", "epochs")
        order = {"standard": 0, "track": 1, "demo": 2, "base": 3, "faithful": 4}
        for p in sorted(all_protocols(), key=lambda p: (order[p.kind], p.name)):
            kind = f"{p.kind} (retired)" if p.retired else p.kind
            table.add_row(p.name, kind, p.method or "", str(p.attack.eps), str(p.train.epochs))
        console.print(table)
        console.print(
            "Details: ardbench list protocols NAME. Use: ardbench run --method M --protocol "
            "NAME (or a recipe naming it); --dry-run prints the resolved run."
        )
    else:
        from ..recipes import list_recipes

        table = Table("method", "recipe", "path")
        for method, name, path in list_recipes():
            table.add_row(method, name, str(path) if path else "built in")
        console.print(table)
        console.print("Use: ardbench run --method M --recipe NAME")
    return 0


# ------------------------------------------------------------------------------------- check


def add_check_parser(sub: Any) -> None:
    p = sub.add_parser("check", help="run the method contract tests on tiny models (CPU, seconds)")
    p.add_argument("--method", required=True)
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from ..train.check import run_contract_checks

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
