"""Subpackages that are also the Python API's functions: ``ardbench.train(...)``,
``ardbench.results(...)``.

Why this exists: ``train`` and ``results`` name both a function of the API
(:mod:`ardbench.api`) and a subpackage (``ardbench/train/``, ``ardbench/results/``). Python's
import system sets a package's attribute to a submodule when the submodule is first imported
(``import ardbench.train.trainer`` sets ``ardbench.train`` to the ``ardbench.train`` package),
so a function bound to the same name in ``ardbench/__init__.py`` would be replaced, or not,
depending on what was imported first. Instead the subpackage module itself is made callable:
its ``__class__`` becomes a :class:`types.ModuleType` subclass whose ``__call__`` delegates
to the API function. ``ardbench.train(method=...)``, ``ardbench.train.trainer`` and
``from ardbench.train import trainer`` all work, in any import order.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["make_callable"]


def make_callable(module_name: str, api_name: str) -> None:
    """Calling the module ``module_name`` calls ``ardbench.api.<api_name>``."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            # imported on call: the API sits above these packages (it imports them)
            from . import api

            return getattr(api, api_name)(*args, **kwargs)

    CallableModule.__name__ = CallableModule.__qualname__ = "CallableModule"
    CallableModule.__call__.__doc__ = f"Same as :func:`ardbench.api.{api_name}`."
    sys.modules[module_name].__class__ = CallableModule
