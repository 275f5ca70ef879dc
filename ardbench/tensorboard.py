"""Optional TensorBoard logging of each epoch (``ardbench run --tensorboard``).

Scalars per epoch, written to ``<run_dir>/tensorboard/`` through
``torch.utils.tensorboard.SummaryWriter``: ``loss/<term>``, ``probe/clean``, ``probe/pgd10``
(accuracies as fractions), ``lr`` and ``time/epoch_s``. The same numbers are in ``log.jsonl``;
this only shows them live (``tensorboard --logdir runs``). The ``tensorboard`` package is not a
dependency of ardbench: without it the run stops before it starts, with one line saying how
to install it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ArdbenchError

__all__ = ["TensorBoardLogger", "require_tensorboard"]

SUBDIR = "tensorboard"


def require_tensorboard() -> type:
    """``SummaryWriter``, or a user error naming the package to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ArdbenchError(
            "--tensorboard needs the tensorboard package, which is not installed",
            hint="pip install tensorboard",
        ) from None
    return SummaryWriter


class TensorBoardLogger:
    """An epoch hook for :func:`ardbench.train.trainer.train` (``on_epoch``)."""

    def __init__(self) -> None:
        self._writer_cls = require_tensorboard()  # fail before training, not after epoch 1
        self._writer: Any = None

    def __call__(self, run_dir: Path, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = self._writer_cls(log_dir=str(Path(run_dir) / SUBDIR))
        step = int(row["epoch"])
        for name, value in (row.get("losses") or {}).items():
            self._writer.add_scalar(f"loss/{name}", value, step)
        for name in ("clean", "pgd10"):
            value = (row.get("probe") or {}).get(name)
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"probe/{name}", value, step)
        if row.get("lr") is not None:
            self._writer.add_scalar("lr", row["lr"], step)
        if row.get("epoch_time_s") is not None:
            self._writer.add_scalar("time/epoch_s", row["epoch_time_s"], step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
