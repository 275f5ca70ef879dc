"""Weight files read without running code, and loaded strictly into an architecture.

``.safetensors`` files are read with the ``safetensors`` package (plain tensors, no pickle:
the recommended format for sharing weights); anything else with
``torch.load(..., weights_only=True)``. Every failure is one :class:`ModelFileError` naming the
file, instead of torch's multi-line message.
"""

from __future__ import annotations

import pickle
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArdbenchError, first_line
from .archive import ModelFileError

__all__ = [
    "SAFETENSORS_SUFFIX",
    "StateDictMismatchError",
    "WeightShapeError",
    "extract_state_dict",
    "load_state_dict_strict",
    "read_weights",
    "torch_load_error",
]

SAFETENSORS_SUFFIX = ".safetensors"
_NESTED_KEYS = ("state_dict", "model", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")


class StateDictMismatchError(ArdbenchError, KeyError):
    """A checkpoint whose keys differ from the architecture's; the message lists them."""


class WeightShapeError(ArdbenchError, RuntimeError):
    """A checkpoint whose tensors do not fit the architecture (shape, dtype or values)."""


def read_weights(path: Path) -> Any:
    """The object a weights file holds: a safetensors mapping, or a weights-only torch.load."""
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = torch_load_error(exc)
        if "global" not in reason.lower():  # an opcode or format the unpickler cannot read
            raise ModelFileError(
                f"{path} is not a readable PyTorch weights file ({reason})",
                hint="the file may be truncated or of another format; save it again",
            ) from None
        raise ModelFileError(
            f"{path} holds more than tensors and plain containers, so it is not loaded ({reason})",
            hint="re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or "
            "as .safetensors",
        ) from None
    except Exception as exc:  # torch reports a bad file as RuntimeError, EOFError, ...
        raise ModelFileError(
            f"{path} is not a readable PyTorch weights file ({first_line(exc)})",
            hint="the file may be truncated or of another format; save it again",
        ) from None


def torch_load_error(exc: BaseException) -> str:
    """torch.load's reason in one line (its weights-only message runs over many lines of
    advice around the reason, e.g. ``Trying to load unsupported GLOBAL posix.system``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
        reasons = [ln for ln in lines if not ln.startswith(advice)]
        reason = reasons[0] if reasons else "refused"
        return f"weights-only unpickler: {reason.replace('WeightsUnpickler error:', '').strip()}"[
            :200
        ]
    return first_line(exc)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(path.read_bytes())
    except OSError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"{path} is not a readable safetensors file ({first_line(exc)})",
            hint="write it with safetensors.torch.save_file(model.state_dict(), PATH)",
        ) from None


def extract_state_dict(obj: Any, where: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint, with wrapper prefixes stripped."""
    if not isinstance(obj, Mapping):
        raise ModelFileError(
            f"{where}: expected a state dict (a mapping), got {type(obj).__name__}"
        )
    for key in _NESTED_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(
            f"{where}: not a state dict; non-tensor entries {bad[:5]} (a state dict may also be "
            f"nested under one of {list(_NESTED_KEYS)})"
        )
    sd: OrderedDict[str, torch.Tensor] = OrderedDict(obj)
    metadata = dict(getattr(obj, "_metadata", {}) or {})
    for prefix in _STRIP_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = OrderedDict((k[len(prefix) :], v) for k, v in sd.items())
            metadata = {_strip_meta(k, prefix): v for k, v in metadata.items()}
    if metadata:
        # BatchNorm reads the saved version from here (old checkpoints lack num_batches_tracked).
        sd._metadata = metadata  # type: ignore[attr-defined]
    return sd


def _strip_meta(key: str, prefix: str) -> str:
    if key == prefix[:-1]:
        return ""
    return key[len(prefix) :] if key.startswith(prefix) else key


def _check_values(module: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """Float weights must be floats (a copy would cast ints silently) and finite."""
    own = module.state_dict()
    for key, value in state_dict.items():
        target = own.get(key)
        if target is None or not target.is_floating_point():
            continue
        if not value.is_floating_point():
            raise WeightShapeError(
                f"{where}: {key} is {value.dtype}, but {type(module).__name__} holds "
                f"{target.dtype} there",
                hint="these are not this architecture's weights",
            )
        if value.numel() and not bool(torch.isfinite(value).all()):
            raise WeightShapeError(
                f"{where}: {key} holds NaN or infinite values",
                hint="the weights are broken; use another checkpoint",
            )


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "checkpoint"
) -> None:
    """A strict load with an error that names the missing/unexpected keys.

    torch's own key matching is used (so old BatchNorm checkpoints without
    ``num_batches_tracked`` still load); any missing or unexpected key is an error, and so is
    a non-float tensor where the architecture has floats, or a NaN / infinite weight.
    """
    _check_values(module, state_dict, where)
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches: torch lists them on several lines
        lines = [ln.strip() for ln in str(exc).splitlines() if "mismatch" in ln]
        raise WeightShapeError(
            f"{where} does not fit {type(module).__name__} (wrong num_classes or width?): "
            + "; ".join(lines[:3] or [first_line(exc)])
            + (f"; ... (+{len(lines) - 3} more)" if len(lines) > 3 else "")
        ) from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        raise StateDictMismatchError(
            f"{where} does not match {type(module).__name__}: " + "; ".join(parts)
        )


def _preview(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n} more)" if len(keys) > n else "")
