"""Datasets and the on-device training loader.

Dataset specs (``--dataset``):

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8×8 images, values 0–16),
  shipped inside the installed package, so the demo and the offline tests need no download.
  Pixels are scaled to uint8 (``round(v * 255 / 16)``), upsampled 8×8 → 32×32 with bilinear
  interpolation (``F.interpolate(mode="bilinear", align_corners=False)``, computed in float64,
  where it is exact, then rounded half-to-even) and replicated to 3 channels. The split is
  stratified and fixed: in each class, ``round(0.2 * count)`` images chosen by
  ``numpy.random.RandomState(0)`` (a frozen stream) go to the test set; both splits keep the
  original order. That gives **1,438 train / 359 test** images, 10 classes.
- ``cifar10``, ``cifar100``: torchvision's on-disk layout under ``data_dir`` (default
  ``$ARDBENCH_DATA_DIR``, else ``$ARDBENCH_CACHE/data``). The network is used only when
  ``download=True``; missing files raise ``FileNotFoundError`` saying where they go.
- ``npz:PATH``: arrays ``x_test, y_test`` and optionally ``x_train, y_train`` (images uint8
  NHWC or NCHW, or float NCHW/NHWC in [0,1]; labels integers). A train-only file is combined
  with a test file as ``npz:TRAIN.npz+TEST.npz`` (the arrays are merged; a name present in both
  is an error). Other arrays (``idx_test``...) are ignored, except ``num_classes``.

Images are stored as uint8 NCHW tensors (float32 NCHW in [0,1] when the source is float) and
converted to float32 [0,1] only per batch (``x / 255``, as torchvision's ``ToTensor``). Every
dataset carries a fingerprint: sha256 over the stored arrays (name, dtype, shape and bytes, in the
order x_train, y_train, x_test, y_test), so the same pixels give the same fingerprint whichever
way they were loaded (torchvision files or an ``npz`` copy).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import Registry, UnknownNameError
from .arrays import (
    DataError,
    MissingArrayError,
    canonical_images,
    canonical_labels,
    check_num_classes,
    infer_num_classes,
)
from .loader import DeviceLoader, to_float01
from .npz import NPZ_PREFIX, read_npz_spec

DATA_DIR_ENV = "ARDBENCH_DATA_DIR"
_FINGERPRINT_VERSION = b"ardbench-dataset-fingerprint-v1\n"
_ARRAY_ORDER = ("x_train", "y_train", "x_test", "y_test")


def default_data_dir() -> Path:
    """``$ARDBENCH_DATA_DIR`` if set, else ``data/`` in the cache (``$ARDBENCH_CACHE``, else
    ``~/.cache/ardbench``)."""
    from ..paths import cache_dir

    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else cache_dir() / "data"


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def fingerprint_arrays(
    x_train: Tensor | None, y_train: Tensor | None, x_test: Tensor, y_test: Tensor
) -> str:
    """sha256 hex over the four arrays (name, dtype, shape, little-endian bytes, fixed order)."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    for name, t in zip(_ARRAY_ORDER, (x_train, y_train, x_test, y_test), strict=True):
        if t is None:
            h.update(f"{name}:none\n".encode())
            continue
        arr = np.ascontiguousarray(t.detach().cpu().numpy())
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        shape = ",".join(str(s) for s in arr.shape)
        h.update(f"{name}:{arr.dtype.str}:{shape}\n".encode())
        h.update(arr.data.cast("B"))
    return h.hexdigest()


@dataclass
class Dataset:
    """A loaded dataset: images uint8 (or float32 in [0,1]) NCHW on the CPU, labels int64.

    Build one with :meth:`from_arrays` (canonicalises the arrays and computes the fingerprint).
    """

    spec: str
    x_train: Tensor | None
    y_train: Tensor | None
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    fingerprint: str
    description: str

    def __post_init__(self) -> None:
        if (self.x_train is None) != (self.y_train is None):
            raise DataError(f"dataset {self.spec!r}: x_train and y_train must come together")
        for xn, yn in (("x_train", "y_train"), ("x_test", "y_test")):
            x, y = getattr(self, xn), getattr(self, yn)
            if x is None:
                continue
            if x.dim() != 4 or x.dtype not in (torch.uint8, torch.float32):
                raise DataError(
                    f"dataset {self.spec!r}: {xn} must be uint8 or float32 NCHW, "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            if y.dim() != 1 or y.dtype != torch.int64 or len(y) != len(x):
                raise DataError(
                    f"dataset {self.spec!r}: {yn} must be int64 of length {len(x)}, "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
        if len(self.x_test) == 0:
            raise DataError(f"dataset {self.spec!r} has no test images (x_test is empty)")
        if self.x_train is not None and len(self.x_train) == 0:
            raise DataError(f"dataset {self.spec!r}: x_train is empty (leave it out instead)")
        if self.x_train is not None and self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"dataset {self.spec!r}: train images are {tuple(self.x_train.shape[1:])} but "
                f"test images are {tuple(self.x_test.shape[1:])}"
            )

    @property
    def test_fingerprint(self) -> str:
        """The fingerprint of the test arrays alone (= the ``fingerprint`` of a test-only copy):
        what ties an evaluation to a run's test points when the two loaded different training
        arrays, or none."""
        return fingerprint_arrays(None, None, self.x_test, self.y_test)

    @classmethod
    def from_arrays(
        cls,
        spec: str,
        *,
        x_test: Any,
        y_test: Any,
        x_train: Any = None,
        y_train: Any = None,
        num_classes: int | None = None,
        description: str = "",
        source: str = "",
    ) -> Dataset:
        """Canonicalise numpy arrays or tensors (see module docstring) and fingerprint them.

        ``num_classes`` defaults to ``max(max label + 1, 10)`` (see
        :func:`~ardbench.data.arrays.infer_num_classes`); ``source`` names where the arrays
        came from, for error messages.
        """
        where = source or spec
        if (x_train is None) != (y_train is None):
            have, missing = ("x_train", "y_train") if y_train is None else ("y_train", "x_train")
            raise MissingArrayError(f"{where}: has {have} but no {missing} (both or neither)")
        xte = canonical_images(x_test, "x_test", where)
        yte = canonical_labels(y_test, "y_test", where, len(xte))
        if len(xte) == 0:
            raise DataError(f"{where} has no test images (x_test is empty)")
        xtr = ytr = None
        if x_train is not None:
            xtr = canonical_images(x_train, "x_train", where)
            ytr = canonical_labels(y_train, "y_train", where, len(xtr))
            if len(xtr) == 0:
                raise DataError(f"{where}: x_train is empty", hint="leave x_train out instead")
        labels = [y for y in (yte, ytr) if y is not None]
        max_label = max(int(y.max()) if len(y) else -1 for y in labels)
        if num_classes is None:
            num_classes = infer_num_classes(labels, where)
        elif num_classes <= max_label:
            raise DataError(
                f"{where}: num_classes={num_classes} but a label is {max_label}",
                hint=f"labels must lie in 0..{num_classes - 1}",
            )
        return cls(
            spec=spec,
            x_train=xtr,
            y_train=ytr,
            x_test=xte,
            y_test=yte,
            num_classes=int(num_classes),
            fingerprint=fingerprint_arrays(xtr, ytr, xte, yte),
            description=description,
        )

    @property
    def has_train(self) -> bool:
        return self.x_train is not None

    @property
    def num_train(self) -> int:
        return 0 if self.x_train is None else len(self.x_train)

    @property
    def max_label(self) -> int:
        """The largest label of either split (a model needs at least this many + 1 logits)."""
        return max(int(y.max()) for y in (self.y_train, self.y_test) if y is not None and len(y))

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_test.shape[1:]
        return int(c), int(h), int(w)

    def test_subset(
        self, n: int | None = None, device: torch.device | str = "cpu"
    ) -> tuple[Tensor, Tensor]:
        """The FIRST ``n`` test points in order (all when None): float32 [0,1] NCHW, int64."""
        total = len(self.x_test)
        if n is None:
            n = total
        if n < 1 or n > total:
            raise DataError(
                f"dataset {self.spec!r} has {total} test points; cannot take the first {n}",
                hint=f"n_examples between 1 and {total}",
            )
        x = to_float01(self.x_test[:n].to(device))
        y = self.y_test[:n].to(device)
        return x, y

    def train_loader(
        self,
        *,
        batch_size: int,
        seed: int,
        augment: bool,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        drop_last: bool = False,
        crop: str = "zero",
        flip: bool = True,
    ) -> DeviceLoader:
        """A :class:`DeviceLoader` over the training split."""
        if self.x_train is None or self.y_train is None:
            raise DataError(
                f"dataset {self.spec!r} has no training split (evaluation only); for npz data "
                f"combine a training file: npz:TRAIN.npz+TEST.npz"
            )
        return DeviceLoader(
            self.x_train,
            self.y_train,
            batch_size=batch_size,
            seed=seed,
            augment=augment,
            device=device,
            shuffle=shuffle,
            drop_last=drop_last,
            crop=crop,
            flip=flip,
        )


# --------------------------------------------------------------------------------------------
# Registry of named datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSource:
    """A named dataset: ``load(data_dir, download) -> Dataset`` plus a one-line description."""

    name: str
    description: str
    load: Callable[[Path, bool], Dataset]


DATASETS: Registry[DatasetSource] = Registry("dataset")

NPZ_DESCRIPTION = (
    "your own arrays: x_test,y_test (+ x_train,y_train) uint8 NHWC or float in [0,1]; "
    "npz:TRAIN.npz+TEST.npz merges two files"
)


def _register(name: str, description: str) -> Callable[[Callable[[Path, bool], Dataset]], Any]:
    def decorator(fn: Callable[[Path, bool], Dataset]) -> Callable[[Path, bool], Dataset]:
        DATASETS.register(name)(DatasetSource(name, description, fn))
        return fn

    return decorator


def dataset_descriptions() -> dict[str, str]:
    """{spec: one-line description} for ``ardbench list datasets`` (npz:PATH included)."""
    out = {name: DATASETS.get(name).description for name in DATASETS.names()}
    out["npz:PATH"] = NPZ_DESCRIPTION
    return out


def load_dataset(
    spec: str, *, data_dir: str | Path | None = None, download: bool = False
) -> Dataset:
    """Load a dataset by spec: a registered name (``digits``, ``cifar10``...) or ``npz:PATH``."""
    if spec.startswith(NPZ_PREFIX):
        return _load_npz_spec(spec)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    try:
        source = DATASETS.get(spec)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc} Or use npz:PATH for arrays in a .npz file.") from None
    return source.load(root, download)


# --- digits ---------------------------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_SIZE = 32


def _digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified fixed split: per class, round(0.2 * count) test images (RandomState(0))."""
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    test: list[np.ndarray] = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        k = int(round(DIGITS_TEST_FRACTION * len(members)))
        test.append(members[rng.permutation(len(members))[:k]])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@_register(
    "digits",
    "scikit-learn handwritten digits (real, offline): 8x8 upsampled to 32x32x3, "
    "1438 train / 359 test, 10 classes",
)
def _load_digits(data_dir: Path, download: bool) -> Dataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    labels = np.asarray(raw.target, dtype=np.int64)
    pix = np.rint(np.asarray(raw.images, dtype=np.float64) * (255.0 / 16.0))
    small = torch.from_numpy(pix.astype(np.uint8)).to(torch.float64)[:, None]  # N,1,8,8
    big = F.interpolate(
        small, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False
    )
    images = torch.round(big).clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    train_idx, test_idx = _digits_split(labels)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    y = torch.from_numpy(labels)
    return Dataset.from_arrays(
        "digits",
        x_train=images[tr].contiguous(),
        y_train=y[tr],
        x_test=images[te].contiguous(),
        y_test=y[te],
        num_classes=10,
        description=(
            f"scikit-learn digits, bilinear 32x32x3, stratified split "
            f"{len(train_idx)} train / {len(test_idx)} test"
        ),
    )


# --- CIFAR ----------------------------------------------------------------------------------


def _load_cifar(name: str, cls_name: str, num_classes: int, root: Path, download: bool) -> Dataset:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    folder = root / cls.base_folder
    needed = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing and not download:
        raise FileNotFoundError(
            f"{name} files not found: {folder}/ is missing {', '.join(missing)}. Put the "
            f"extracted '{cls.base_folder}' folder of {cls.filename} ({cls.url}) at "
            f"{folder}/, set --data-dir (or ${DATA_DIR_ENV}) to the directory that holds it, "
            f"or pass --download to fetch it into {root}/."
        )
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as exc:
        raise DataError(
            f"{name} files in {folder}/ failed torchvision's integrity check ({exc}); delete "
            f"the folder and pass --download, or copy the original files there"
        ) from exc
    return Dataset.from_arrays(
        name,
        x_train=train.data,
        y_train=np.asarray(train.targets),
        x_test=test.data,
        y_test=np.asarray(test.targets),
        num_classes=num_classes,
        description=f"{name} (torchvision files in {folder})",
        source=str(folder),
    )


@_register("cifar10", "CIFAR-10 from torchvision's files under --data-dir (--download fetches)")
def _load_cifar10(data_dir: Path, download: bool) -> Dataset:
    return _load_cifar("cifar10", "CIFAR10", 10, data_dir, download)


@_register("cifar100", "CIFAR-100 from torchvision's files under --data-dir (--download fetches)")
def _load_cifar100(data_dir: Path, download: bool) -> Dataset:
    return _load_cifar("cifar100", "CIFAR100", 100, data_dir, download)


# --- npz ------------------------------------------------------------------------------------


def _load_npz_spec(spec: str) -> Dataset:
    arrays, files = read_npz_spec(spec)
    num_classes = None
    if "num_classes" in arrays:
        num_classes = check_num_classes(arrays["num_classes"], f"npz {files}")
    ds = Dataset.from_arrays(
        spec,
        x_train=arrays.get("x_train"),
        y_train=arrays.get("y_train"),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        num_classes=num_classes,
        source=f"npz {files}",
    )
    ds.description = (
        f"npz {files}: {ds.num_train} train / {ds.num_test} test, {ds.num_classes} classes"
    )
    return ds
