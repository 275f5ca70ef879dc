"""Atomic file writes: a record or checkpoint is either the old file or the new one, never half."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, data: Any, *, sort_keys: bool = True) -> None:
    """``sort_keys=False`` keeps the caller's key order (RobustBench's model_info fields)."""
    blob = (json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n").encode()
    _atomic_write(Path(path), lambda fh: fh.write(blob))


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
