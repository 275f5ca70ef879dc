"""Running one registered column: :class:`ColumnRun` and the per-point runner.

A column with a per-batch ``attack`` (FGSM, PGD-20, CW, a registered variant) and the clean
column run through :func:`run_points`: chunk by chunk, resuming from the evaluation state,
point-wise worst case. A column with its own ``runner`` (AutoAttack) gets the same
:class:`ColumnRun` and fills its per-point flags, settings, warnings and breakdown itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..protocols.column import Column, PointContext
from .columns import ball_violation, predict, resolve_code
from .progress import Progress
from .settings import EvalSpec
from .state import EvalState

__all__ = ["ColumnRun", "run_column", "run_points"]


@dataclass
class ColumnRun:
    """One column's run: what it attacks, where it resumes from and what it reports.

    ``entry`` is the column's part of the resumable state (``done``, ``correct``, ``chunks``,
    ``time_s``, ``warnings``); ``settings`` the column's recorded settings (a runner may add to
    them); ``clean`` the clean column's per-point flags (None while clean itself runs);
    ``breakdown`` and ``warnings`` what a runner adds to the result (AutoAttack's)."""

    column: Column
    model: nn.Module
    x: Tensor
    y: Tensor
    spec: EvalSpec
    entry: dict[str, Any]
    state: EvalState
    bar: Progress
    batch_size: int
    chunk: int
    settings: dict[str, Any]
    clean: Tensor | None = None
    breakdown: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # besides the state's, not resumed


def run_column(run: ColumnRun) -> Tensor:
    """The column's per-point flags (True: robust), by its own runner or :func:`run_points`."""
    if run.column.runner is not None:
        return cast(Tensor, resolve_code(run.column.runner)(run))
    return run_points(run)


def _batch_flags(run: ColumnRun, b0: int, b1: int) -> Tensor:
    xb, yb = run.x[b0:b1], run.y[b0:b1]
    col, spec = run.column, run.spec
    if col.attack is None:
        return predict(run.model, xb) == yb
    ctx = PointContext(col.key, spec.eps, spec.norm, spec.seed, b0, run.settings)
    x_adv = cast(Tensor, resolve_code(col.attack)(run.model, xb, yb, ctx))
    viol = ball_violation(x_adv, xb, spec.eps, spec.norm)
    if viol > 1e-5:
        run.entry["warnings"].append(
            f"{col.key}: adversarial points leave the eps-ball or [0,1] by {viol:.3g}"
        )
    ok = predict(run.model, x_adv) == yb
    if run.clean is not None:
        ok = ok & run.clean[b0:b1].to(ok.device)
    return ok


def run_points(run: ColumnRun) -> Tensor:
    """Per-point correctness, chunk by chunk, resuming from ``run.entry`` (point-wise worst
    case: an attacked point also needs ``run.clean``)."""
    n, entry = len(run.x), run.entry
    task = run.bar.add(run.column.title, n, entry["done"])
    while entry["done"] < n:
        start = entry["done"]
        end = min(start + run.chunk, n)
        t0 = time.perf_counter()
        parts = []
        for b0 in range(start, end, run.batch_size):
            b1 = min(b0 + run.batch_size, end)
            parts.append(_batch_flags(run, b0, b1).cpu())
            run.bar.advance(task, b1 - b0)
        entry["correct"].extend(int(v) for v in torch.cat(parts).tolist())
        entry["done"] = end
        entry["time_s"] += time.perf_counter() - t0
        entry["chunks"].append({"start": start, "end": end})
        run.state.save()
    return torch.tensor(entry["correct"], dtype=torch.bool)
