"""``ardbench list teachers``: which teachers are on this machine, and where a RobustBench
checkpoint must be put so that the recipes naming it run offline.

Three kinds of teacher are cached locally:

- the demo teacher (spec ``demo``): trained on first use, cached under
  ``$ARDBENCH_CACHE/demo/teacher-<config hash>/``;
- RobustBench models (``robustbench:ID``): loaded from
  ``<model dir>/<dataset>/Linf/<ID>.pt`` (RobustBench's own layout), the model dir being
  ``$ARDBENCH_MODEL_DIR``, else ``$ARDBENCH_CACHE/robustbench``; ``--download`` fetches a
  missing one, which needs the network;
- ardbench runs (``run:RUN_ID``): any finished run's final weights, ``<runs>/<RUN_ID>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Teacher", "cached_teachers", "recipe_teachers", "robustbench_path"]


@dataclass(frozen=True)
class Teacher:
    spec: str  # what to pass as --teacher
    kind: str  # demo | robustbench | run
    path: Path
    detail: str = ""


def robustbench_path(
    model_id: str, dataset: str = "cifar10", model_dir: Path | None = None
) -> Path:
    """Where ``robustbench:ID`` is loaded from (see the module docstring)."""
    from .models import default_model_dir

    root = Path(model_dir).expanduser() if model_dir else default_model_dir()
    return root / dataset / "Linf" / f"{model_id}.pt"


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def cached_teachers(runs_dir: Path, model_dir: Path | None = None) -> list[Teacher]:
    """Every teacher found on this machine (see the module docstring)."""
    import json

    from .models import default_model_dir
    from .paths import cache_dir

    found: list[Teacher] = []
    demo_root = cache_dir() / "demo"
    current = _demo_hash()
    for d in sorted(demo_root.glob("teacher-*")) if demo_root.is_dir() else []:
        if not (d / "record.json").is_file():
            continue  # a teacher being trained, or an interrupted one
        state = "current" if d.name == f"teacher-{current}" else "from another ardbench version"
        spec = "demo" if state == "current" else f"run:{d}"
        found.append(Teacher(spec, "demo", d, state))
    rb_root = Path(model_dir).expanduser() if model_dir else default_model_dir()
    for pt in sorted(rb_root.glob("*/*/*.pt")) if rb_root.is_dir() else []:
        dataset, threat = pt.parent.parent.name, pt.parent.name
        found.append(
            Teacher(f"robustbench:{pt.stem}", "robustbench", pt, f"{dataset} {threat}, {_size(pt)}")
        )
    for record in sorted(runs_dir.glob("*/record.json")) if runs_dir.is_dir() else []:
        try:
            r = json.loads(record.read_text(encoding="utf-8"))
            acc = r["eval"]["accuracy"]
            detail = f"{r['method']['name']}, {r['student']['arch']}, " + ", ".join(
                f"{k} {100 * v:.1f}%" for k, v in acc.items() if isinstance(v, (int, float))
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(Teacher(f"run:{record.parent.name}", "run", record.parent, detail))
    return found


def _demo_hash() -> str:
    from .train.demo import demo_teacher_config

    return demo_teacher_config().config_hash()


def recipe_teachers() -> dict[tuple[str, str], list[str]]:
    """(RobustBench model id, dataset) -> the recipes (``method/name``) that name it."""
    from .errors import ArdbenchError
    from .protocols import PROTOCOLS, get_protocol
    from .recipes import list_recipes, load_recipe_file

    out: dict[tuple[str, str], list[str]] = {}
    for method, name, path in list_recipes():
        if path is None:
            continue
        try:
            recipe = load_recipe_file(path)
        except ArdbenchError:
            continue
        teacher = str(recipe.get("teacher") or "")
        if not teacher.startswith("robustbench:"):
            continue
        dataset = recipe.get("dataset")
        protocol = recipe.get("protocol")
        if dataset is None and isinstance(protocol, str) and protocol in PROTOCOLS:
            dataset = get_protocol(protocol).dataset
        key = (teacher.partition(":")[2], str(dataset or "cifar10"))
        out.setdefault(key, []).append(f"{method}/{name}")
    return dict(sorted(out.items()))
