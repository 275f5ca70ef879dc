"""Method registry. Built-ins live one per file in this package; submissions in
``baselines/contrib/<name>/method.py`` and external packages (entry-point group
``ardbench.methods``) register through the same ``@register_method`` decorator."""

from __future__ import annotations

import importlib
import pkgutil

from .base import (
    METHODS,
    Batch,
    Method,
    MethodConfig,
    SetupContext,
    StepContext,
    build_method,
    check_losses,
    get_method,
    register_method,
)
from .config import Fraction, NonNegative, NonNegativeInt, Positive, PositiveInt, Range

__all__ = [
    "METHODS",
    "Batch",
    "Fraction",
    "Method",
    "MethodConfig",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "PositiveInt",
    "Range",
    "SetupContext",
    "StepContext",
    "build_method",
    "check_losses",
    "get_method",
    "register_method",
]


# modules of this package that hold no method
_SUPPORT_MODULES = {"base", "config", "contrib", "losses"}


def _import_builtins() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _SUPPORT_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


METHODS.add_loader(_import_builtins)
# baselines/contrib/<name>/method.py submissions, discovered without installing anything
METHODS.add_loader(importlib.import_module("ardbench.methods.contrib").load_contrib_methods)
