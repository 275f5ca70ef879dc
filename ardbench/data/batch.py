"""One training batch: what the loader yields and what a method's ``losses`` receives."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    """One training batch, already augmented and on the device."""

    x: Tensor  # float32 in [0,1], NCHW
    y: Tensor  # int64 labels
    index: Tensor  # int64 dataset indices (for memoisation and per-sample state)
