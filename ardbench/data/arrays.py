"""Array validation and canonical layout for every dataset source (torchvision, digits, npz).

Everything a data file can get wrong is a :class:`DataError` naming the file, the array and
the bad value: rank, shape, dtype (object, string, structured and complex arrays are refused),
non-finite or out-of-range pixels, labels that are not small non-negative integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ArdbenchError

# a label this large is not a class index (and would overflow on the way to int64)
MAX_LABEL = 1_000_000


class DataError(ArdbenchError, ValueError):
    """A data file or array that cannot be used; the message names it and the bad value."""


class MissingArrayError(ArdbenchError, KeyError):
    """A required array is absent from a data file; the message names the array and file."""


def as_numpy(a: Any, name: str, where: str) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    try:
        arr = np.asarray(a)
    except Exception as exc:
        raise DataError(f"{where}: {name} is not an array ({type(a).__name__}: {exc})") from None
    if arr.dtype.hasobject or arr.dtype.kind in "OSUVcMm":
        raise DataError(
            f"{where}: {name} has dtype {arr.dtype}, not numbers",
            hint="images as uint8 (0..255) or float in [0,1], labels as integers",
        )
    return arr


def canonical_images(a: Any, name: str, where: str) -> Tensor:
    """uint8 NHWC/NCHW -> uint8 NCHW; float NCHW/NHWC in [0,1] -> float32 NCHW. Contiguous."""
    arr = as_numpy(a, name, where)
    if arr.ndim == 3:  # N,H,W grayscale
        arr = arr[:, None]
    if arr.ndim != 4:
        raise DataError(
            f"{where}: {name} must be 4-D images (N,H,W,C or N,C,H,W), got shape {arr.shape}"
        )
    is_uint8 = arr.dtype == np.uint8
    is_float = np.issubdtype(arr.dtype, np.floating)
    if not (is_uint8 or is_float):
        raise DataError(
            f"{where}: {name} must be uint8 (0..255) or float in [0,1], got dtype {arr.dtype}"
        )
    c_last, c_first = arr.shape[3] <= 4, arr.shape[1] <= 4
    if c_last and c_first:
        channels_last = is_uint8  # ambiguous: uint8 defaults to NHWC, float to NCHW
    elif c_last or c_first:
        channels_last = c_last
    else:
        raise DataError(
            f"{where}: {name} has shape {arr.shape}: no channel axis of size "
            f"1-4 at position 1 (NCHW) or 3 (NHWC)"
        )
    if 0 in arr.shape[1:]:
        raise DataError(f"{where}: {name} has shape {arr.shape}: images of size zero")
    if is_float:  # any width or byte order; the tensor is float32 either way
        arr = arr.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    if is_float:
        t = t.to(torch.float32)
        if t.numel():
            if not bool(torch.isfinite(t).all()):
                raise DataError(f"{where}: {name} has non-finite values (NaN or inf)")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(
                    f"{where}: float {name} must lie in [0,1], found [{lo:g}, {hi:g}] "
                    f"(store 0..255 pixels as uint8)"
                )
    return t.contiguous()


def canonical_labels(a: Any, name: str, where: str, n: int) -> Tensor:
    arr = as_numpy(a, name, where)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{where}: {name} must be 1-D labels, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"{where}: {name} must hold integer labels, got dtype {arr.dtype}")
    if len(arr) != n:
        raise DataError(f"{where}: {name} has {len(arr)} labels for {n} images")
    if len(arr) and int(arr.min()) < 0:
        raise DataError(f"{where}: {name} has a negative label ({int(arr.min())})")
    if len(arr) and int(arr.max()) >= MAX_LABEL:
        raise DataError(f"{where}: {name} has a label of {int(arr.max())}, not a class index")
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))


def check_num_classes(value: Any, where: str) -> int:
    """A ``num_classes`` stored beside the arrays: one positive integer."""
    arr = np.asarray(value)
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.integer) and not arr.dtype == np.bool_):
        raise DataError(
            f"{where}: num_classes must be one integer, got {arr.dtype} of shape {arr.shape}"
        )
    n = int(arr.reshape(-1)[0])
    if not 1 <= n <= MAX_LABEL:
        raise DataError(f"{where}: num_classes must be between 1 and {MAX_LABEL}, got {n}")
    return n


# beyond CIFAR-100: a label above this, in a file that does not say num_classes, needs most
# of the classes it implies to be present
_PLAUSIBLE_CLASSES = 100


def infer_num_classes(labels: list[Tensor], where: str) -> int:
    """``max(max label + 1, 10)``, unless the labels look like a mistake: more than 100
    classes implied but at most a tenth of them present (labels 0-9 and a stray 998 are no
    999-class set). Such a file must say ``num_classes``."""
    max_label = max((int(y.max()) for y in labels if len(y)), default=-1)
    implied = max(max_label + 1, 10)
    if implied > _PLAUSIBLE_CLASSES:
        all_y = torch.cat(labels)
        present = int(torch.unique(all_y).numel())
        if present * 10 <= implied:
            raise DataError(
                f"{where}: labels go up to {max_label}, but only {present} of those "
                f"{implied} classes occur in {len(all_y)} labels (a stray label?)",
                hint="fix the labels, or store the class count as an array num_classes",
            )
    return implied
