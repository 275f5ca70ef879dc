"""The evaluation's resumable state: per-point results of clean / FGSM / PGD-20 / CW, saved
atomically after every chunk and keyed by everything the results depend on.

AutoAttack keeps its per-point results in pyautoattack's own state files, in the folder
:attr:`EvalState.aa_dir` beside this one; the AA column's record here holds per finished chunk
only what those files do not (see :mod:`ardbench.eval.autoattack`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..io import write_json_atomic

__all__ = ["EvalState", "data_digest", "model_digest"]

# v2: the AA column's per-point flags moved to pyautoattack's own state files
STATE_FORMAT = "ardbench-eval-state-v2"


def _tensor_digest(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, Tensor):
            _tensor_digest(h, t)
    return h.hexdigest()


def data_digest(x: Tensor, y: Tensor) -> str:
    h = hashlib.sha256()
    _tensor_digest(h, x)
    _tensor_digest(h, y)
    return h.hexdigest()


class EvalState:
    """Per-point results saved atomically after every chunk, keyed by what defines them."""

    def __init__(self, path: Path | None, key_fields: dict[str, Any]) -> None:
        self.path = path
        blob = json.dumps(key_fields, sort_keys=True).encode()
        self.key = hashlib.sha256(blob).hexdigest()
        self.data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "key": self.key,
            "key_fields": key_fields,
            "columns": {},
        }
        self.resumed = False
        if path is not None and path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                old = None
            if not isinstance(old, dict) or not isinstance(old.get("columns"), dict):
                raise ConfigError(
                    f"evaluation state {path} is not a state file (corrupt or edited)",
                    hint="delete it to start this evaluation over",
                )
            if old.get("format") != STATE_FORMAT or old.get("key") != self.key:
                diff = {
                    k: (old.get("key_fields", {}).get(k), v)
                    for k, v in key_fields.items()
                    if old.get("key_fields", {}).get(k) != v
                }
                raise ConfigError(
                    f"evaluation state {path} belongs to a different evaluation "
                    f"(differs in {sorted(diff) or 'format'}); delete it or use another state path"
                )
            self.data = old
            self.resumed = True

    @property
    def aa_dir(self) -> Path | None:
        """Where pyautoattack keeps its state files for this evaluation."""
        return None if self.path is None else self.path.with_name(self.path.stem + ".autoattack")

    def column(self, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The column's record (``correct``: per-point flags; empty for AA, see the module doc)."""
        settings = json.loads(json.dumps(settings))
        entry: dict[str, Any] | None = self.data["columns"].get(name)
        if entry is None or entry.get("settings") != settings:
            entry = {
                "settings": settings,
                "done": 0,
                "correct": [],
                "time_s": 0.0,
                "chunks": [],
                "warnings": [],
            }
            self.data["columns"][name] = entry
        return entry

    def save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.data)
