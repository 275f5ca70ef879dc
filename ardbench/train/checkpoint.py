"""A run directory's files: the per-epoch checkpoint, the epoch log, and reading them back.

``checkpoint.pt`` is written atomically after every epoch (student, method parameters,
optimiser, the checkpoint rule's state, the epoch, elapsed time), only when every weight is
finite, so the last good checkpoint is never replaced by a broken one. ``log.jsonl`` gets one
line per epoch *before* the checkpoint: on resume, lines of epochs after the checkpoint are
dropped, and a line torn by a kill (the last one, half-written) is ignored.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ArdbenchError
from ..io import append_jsonl, remove_stale_tmp, save_torch_atomic, write_text_atomic
from ..models.weights import torch_load_error

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.json"


class RunDirError(ArdbenchError):
    """A run directory whose files cannot be used (missing, corrupt, from another run)."""


def all_finite(state: dict[str, Any]) -> bool:
    """Every floating tensor of a (nested) state is finite: one read per call."""
    flags = [torch.isfinite(t).all() for t in _tensors(state) if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _tensors(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    save_torch_atomic(run_dir / CHECKPOINT, state)


def load_checkpoint(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """The last checkpoint, loaded weights-only; a clear error when it is missing or corrupt."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} has no {CHECKPOINT} to resume from (no epoch finished)",
            hint="start a new run",
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise RunDirError(
            f"{path} is not a readable checkpoint ({torch_load_error(exc)})",
            hint="start a new run; this one cannot be resumed",
        ) from None
    if not isinstance(state, dict) or not {"epoch", "student", "optimizer"} <= set(state):
        raise RunDirError(f"{path} is not an ardbench checkpoint", hint="start a new run")
    return state


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch log; a torn (unparseable) last line is dropped, a torn earlier line is an
    error (the file was edited or is not a log)."""
    path = run_dir / LOG
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a line torn by a kill
            raise RunDirError(f"{path} line {i + 1} is not JSON", hint="start a new run") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise RunDirError(f"{path} line {i + 1} is not an epoch line", hint="start a new run")
        rows.append(row)
    return rows


def truncate_log(run_dir: Path, epochs_done: int) -> None:
    """Keep the log lines of the epochs the checkpoint holds (atomically rewritten)."""
    rows = [r for r in read_log(run_dir) if r["epoch"] <= epochs_done]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    write_text_atomic(run_dir / LOG, text)


def log_epoch(run_dir: Path, row: dict[str, Any]) -> None:
    append_jsonl(run_dir / LOG, row)


def clean_run_dir(run_dir: Path) -> None:
    """Remove what a killed writer left behind (temporary files)."""
    remove_stale_tmp(run_dir)
