"""The demo's robust teacher: a small PGD-AT network on the embedded digits data, trained on
first use and cached (``$ARDBENCH_CACHE/demo/teacher-<config hash>``), so the demo needs no
download and no file from elsewhere."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from rich.console import Console

from ..models import register_spec_alias
from ..paths import cache_dir
from ..protocols import RunConfig

TEACHER_OVERRIDES = {"train": {"epochs": 15, "milestones": [12]}}

# demo teacher specs -> the method that trains them: "demo" is the robust teacher,
# "demo_natural" a naturally trained one (MTARD's clean teacher, IAD-II's natural teacher)
DEMO_TEACHERS = {"demo": "pgd_at", "demo_natural": "natural"}


def demo_teacher_config(spec: str = "demo") -> RunConfig:
    from ..recipes import resolve_config

    return resolve_config(DEMO_TEACHERS[spec], preset="demo", cli=TEACHER_OVERRIDES)


def ensure_demo_teacher(console: Console | None = None, spec: str = "demo") -> str:
    """Train (once) and return the model spec ``run:<dir>`` of the cached demo teacher
    ``spec`` (a key of ``DEMO_TEACHERS``)."""
    from .trainer import train  # the trainer loads teachers: import it when needed

    console = console or Console(stderr=True)
    cfg = demo_teacher_config(spec)
    root = cache_dir() / "demo"
    final = root / f"teacher-{cfg.config_hash()}"
    if (final / "record.json").is_file():
        return f"run:{final}"
    console.print(f"[bold]training the demo teacher[/] ({cfg.method}, cached in {final})")
    root.mkdir(parents=True, exist_ok=True)
    # the directory name is the run id: it must be a valid one (no leading dot)
    tmp = root / f"teacher-{cfg.config_hash()}-pid{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    train(cfg, run_dir=tmp, progress=console.quiet is False, console=console)
    try:
        os.replace(tmp, final)  # atomic: a concurrent demo either sees no teacher or a whole one
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race; use its teacher
    return f"run:{final}"


for _spec in DEMO_TEACHERS:
    register_spec_alias(_spec, functools.partial(ensure_demo_teacher, spec=_spec))


def teacher_record(spec: str | None) -> Path | None:
    """record.json of a ``run:`` teacher, for showing the teacher's own figures."""
    if not spec or not spec.startswith("run:"):
        return None
    path = Path(spec[4:])
    rec = path / "record.json"
    return rec if rec.is_file() else None
