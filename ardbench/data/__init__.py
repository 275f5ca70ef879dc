"""Datasets (registered names and ``npz:`` arrays, validated on load) and the on-device loader."""

from __future__ import annotations

from .batch import Batch
from .datasets import (
    DATASETS,
    NPZ_PREFIX,
    Dataset,
    DatasetSource,
    MissingArrayError,
    dataset_descriptions,
    default_data_dir,
    fingerprint_arrays,
    load_dataset,
)
from .loader import CROP_PADDING, DeviceLoader, augment_batch, to_float01

__all__ = [
    "CROP_PADDING",
    "DATASETS",
    "NPZ_PREFIX",
    "Batch",
    "Dataset",
    "DatasetSource",
    "DeviceLoader",
    "MissingArrayError",
    "augment_batch",
    "dataset_descriptions",
    "default_data_dir",
    "fingerprint_arrays",
    "load_dataset",
    "to_float01",
]
