"""The one trainer: the training loop, the step, the speed features.

Calling the package, ``ardbench.train(method=..., ...)``, is :func:`ardbench.api.train` (the
Python API); ``ardbench.train.train`` is the trainer's own entry point (a resolved
:class:`~ardbench.protocols.RunConfig` in, a :class:`RunResult` out).

Importing the package registers the ``demo`` teacher spec (``ardbench.train.demo``).
"""

from __future__ import annotations

from .._callable import make_callable
from . import demo  # noqa: F401  (registers the "demo" model spec)
from .setup import TrainingError
from .trainer import RunResult, resume, train

__all__ = ["RunResult", "TrainingError", "resume", "train"]

# `ardbench.train` is both this package and the API function: the package is made callable
# (see ardbench/_callable.py for why a plain function of that name would not survive imports)
make_callable(__name__, "train")
