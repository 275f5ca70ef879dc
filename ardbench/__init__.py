"""ardbench: a reproducibility benchmark for adversarially robust knowledge distillation.

The Python API (:mod:`ardbench.api`; the command line is a layer over it)::

    import ardbench

    run = ardbench.train(method="rslad", recipe="demo", seed=0)   # -> ardbench.Run
    model = run.model()                                            # eval-mode nn.Module
    result = ardbench.evaluate(model, dataset="digits", eps="8/255", attacks="clean,pgd20")
    df = ardbench.results("runs")                                  # one row per run

``import ardbench`` is light: the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Run",
    "__version__",
    "check_teacher",
    "config",
    "evaluate",
    "resume",
    "results",
    "train",
    "verify",
]

# `train` and `results` are subpackages made callable (ardbench/_callable.py explains why);
# the other API names live in ardbench.api
_SUBPACKAGES = ("train", "results")
_API = ("Run", "check_teacher", "config", "evaluate", "resume", "verify")

if TYPE_CHECKING:  # pragma: no cover
    from . import results, train
    from .api import Run, check_teacher, config, evaluate, resume, verify


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _API:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module 'ardbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
