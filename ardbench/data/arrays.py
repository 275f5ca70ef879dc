"""Array validation and canonical layout for every dataset source (torchvision, digits, npz)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_numpy(a: Any, name: str, where: str) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as exc:  # pragma: no cover - defensive
        raise ValueError(f"{where}: {name} is not an array: {exc}") from exc


def canonical_images(a: Any, name: str, where: str) -> Tensor:
    """uint8 NHWC/NCHW -> uint8 NCHW; float NCHW/NHWC in [0,1] -> float32 NCHW. Contiguous."""
    arr = as_numpy(a, name, where)
    if arr.ndim == 3:  # N,H,W grayscale
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(
            f"{where}: {name} must be 4-D images (N,H,W,C or N,C,H,W), got shape {arr.shape}"
        )
    is_uint8 = arr.dtype == np.uint8
    is_float = np.issubdtype(arr.dtype, np.floating)
    if not (is_uint8 or is_float):
        raise ValueError(
            f"{where}: {name} must be uint8 (0..255) or float in [0,1], got dtype {arr.dtype}"
        )
    c_last, c_first = arr.shape[3] <= 4, arr.shape[1] <= 4
    if c_last and c_first:
        channels_last = is_uint8  # ambiguous: uint8 defaults to NHWC, float to NCHW
    elif c_last or c_first:
        channels_last = c_last
    else:
        raise ValueError(
            f"{where}: {name} has shape {arr.shape}: no channel axis of size "
            f"1-4 at position 1 (NCHW) or 3 (NHWC)"
        )
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    if is_float:
        t = t.to(torch.float32)
        if t.numel():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{where}: {name} has non-finite values")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{where}: float {name} must lie in [0,1], found [{lo:g}, {hi:g}] "
                    f"(store 0..255 pixels as uint8)"
                )
    return t.contiguous()


def canonical_labels(a: Any, name: str, where: str, n: int) -> Tensor:
    arr = as_numpy(a, name, where)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D labels, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(f"{where}: {name} must hold integer labels, got dtype {arr.dtype}")
    if len(arr) != n:
        raise ValueError(f"{where}: {name} has {len(arr)} labels for {n} images")
    if len(arr) and int(arr.min()) < 0:
        raise ValueError(f"{where}: {name} has a negative label ({int(arr.min())})")
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))
