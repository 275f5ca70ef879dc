"""What a run cost: wall time, device, training throughput and peak memory, from the record's
``wall_time_s`` and ``hardware`` block (``train_images_per_s`` and ``peak_memory_mb`` are
written by the trainer since this site exists; older records show a dash there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..results.schema import RecordModel
from ..results.tables import Row
from .data import RunInfo, finite
from .html import DASH, Cell

__all__ = ["RowCost", "device_name", "row_cost"]


def device_name(model: RecordModel) -> str:
    """The GPU's name on CUDA, else the device and the processor (e.g. ``cpu (x86_64)``)."""
    extra: Mapping[str, Any] = model.hardware.model_extra or {}
    gpu = extra.get("gpu")
    if isinstance(gpu, str) and gpu:
        return gpu
    proc = extra.get("processor")
    device = model.hardware.device
    return f"{device} ({proc})" if isinstance(proc, str) and proc else device


def hardware_number(model: RecordModel, key: str) -> float | None:
    return finite((model.hardware.model_extra or {}).get(key))


@dataclass(frozen=True)
class RowCost:
    wall: Cell
    device: str
    images: Cell
    memory: Cell


def _mean_cell(values: list[float], total: int, fmt: str) -> Cell:
    if not values:
        return Cell(DASH, sort="", cls="num", title="not recorded by these runs")
    mean = sum(values) / len(values)
    note = f'<span class="sub">{len(values)} of {total} runs</span>' if len(values) < total else ""
    return Cell(format(mean, fmt) + note, sort=mean, cls="num")


def row_cost(row: Row, runs: Mapping[str, RunInfo]) -> RowCost:
    models = [runs[rid].model for rid in row.run_ids]
    n = len(models)
    walls = [m.wall_time_s / 60 for m in models]
    images = [v for m in models if (v := hardware_number(m, "train_images_per_s")) is not None]
    memory = [v for m in models if (v := hardware_number(m, "peak_memory_mb")) is not None]
    devices = sorted({device_name(m) for m in models})
    return RowCost(
        wall=_mean_cell(walls, n, ".1f"),
        device=", ".join(devices),
        images=_mean_cell(images, n, ".0f"),
        memory=_mean_cell(memory, n, ".0f"),
    )
