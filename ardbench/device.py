"""The one device resolver: ``auto`` is CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from .errors import ArdbenchError


class DeviceError(ArdbenchError, RuntimeError):
    """A device that is not a device name, or not on this machine."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def check_device(spec: str | torch.device | None) -> torch.device:
    """:func:`resolve_device`, and the device must exist here (checked before any work)."""
    try:
        device = resolve_device(spec)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DeviceError(
            f"device {str(spec)!r} is not a device name ({str(exc).splitlines()[0][:100]})",
            hint="use auto, cpu, cuda or cuda:N",
        ) from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {str(spec)!r} is not supported", hint="use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(spec)!r} asked for, but no CUDA GPU is available",
            hint="use --device cpu (or auto)",
        )
    if device.type == "cuda" and device.index is not None:
        if device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {str(spec)!r}: this machine has {torch.cuda.device_count()} GPU(s)",
                hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
            )
    return device
