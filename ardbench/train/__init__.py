"""The one trainer: the training loop, the step, the speed features.

Importing the package registers the ``demo`` teacher spec (``ardbench.train.demo``).
"""

from __future__ import annotations

from . import demo  # noqa: F401  (registers the "demo" model spec)
from .setup import TrainingError
from .trainer import RunResult, resume, train

__all__ = ["RunResult", "TrainingError", "resume", "train"]
