"""The types the captured step and its self-check share (graph.py drives, graph_check.py
checks; both import these, so neither imports the other's module for its types).

:class:`EagerStep` is what :class:`~ardbench.train.graph.CapturedStep` drives (the
:class:`~ardbench.train.step.TrainStep`); :class:`CapturingStep` is what the self-check needs of
the driver; :class:`Backend` / :class:`Captured` are the capture backends (CUDA graphs, or the
CPU stand-in that tests the orchestration).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ..methods import Batch, Method
from .speed import SpeedPlan
from .stats import EpochStats

__all__ = ["Backend", "Captured", "CapturingStep", "EagerStep", "GraphCounts"]


class Captured(Protocol):
    executed: bool  # True: capturing also ran the step (EagerReplay)
    outputs: dict[str, Tensor]  # the step's outputs (static: rewritten by every replay)

    def replay(self) -> dict[str, Tensor]: ...

    def release(self) -> None: ...


class Backend(Protocol):
    def warmup(self) -> contextlib.AbstractContextManager: ...

    def capture(self, fn: Callable[[], dict[str, Tensor]]) -> Captured: ...


@dataclass
class GraphCounts:
    warmup: int = 0
    captures: int = 0
    replays: int = 0
    eager: int = 0  # other shapes (the epoch's last batch) and fallback
    self_checks: int = 0  # first captures compared with an eager step (graph_check.py)
    keys: list[Any] = field(default_factory=list)  # capture keys, in capture order


class EagerStep(Protocol):
    """What :class:`CapturedStep` drives: a training step that can run eagerly
    (:class:`~ardbench.train.step.TrainStep`; a protocol, so that this module, which the step
    imports, needs nothing from it)."""

    plan: SpeedPlan
    stats: EpochStats
    method: Method[Any]
    method_name: str
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    student: torch.nn.Module
    raw_extras: dict[str, torch.nn.Module]  # the extra frozen networks, unwrapped

    def eager(self, batch: Batch, *, epoch: int, step: int) -> dict[str, Tensor]: ...

    def _run(
        self, batch: Batch, epoch: int, step: int, reads: set[str] | None = None
    ) -> dict[str, Tensor]: ...


class CapturingStep(Protocol):
    """What the self-check (graph_check.py) drives of :class:`~ardbench.train.graph.CapturedStep`."""

    step: EagerStep
    backend: Backend
    counts: GraphCounts
    plan: SpeedPlan
    off: str | None

    def _capture(self, batch: Batch, epoch: int, step: int) -> dict[str, Tensor] | None: ...

    def _replay(self, batch: Batch) -> dict[str, Tensor]: ...

    def _disable(self, reason: str) -> None: ...
