"""The built-in columns' code: per-point random starts and the FGSM / PGD-20 / CW adversarial
points (AutoAttack is :mod:`ardbench.eval.autoattack`); what each column is, is registered in
:mod:`ardbench.protocols.columns` (the built-ins: :mod:`ardbench.protocols.builtin_columns`).

Accuracy is point-wise worst case, as RobustBench counts AutoAttack: a point counts as robust in
an attacked column only when it is classified correctly both clean and at the adversarial point
(so every attacked column is <= clean, per class too).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..attacks import ce_objective, cw_objective, fgsm, pgd, random_start
from ..errors import ConfigError
from ..protocols.builtin_columns import CW_KAPPA, PRECISION, SEEDING
from ..protocols.column import PointContext, SettingsContext
from ..protocols.columns import get_column, parse_columns

__all__ = [
    "CW_KAPPA",
    "PRECISION",
    "SEEDING",
    "START_BLOCK",
    "adversarial_examples",
    "ball_violation",
    "class_accuracies",
    "column_settings",
    "cw_points",
    "fgsm_points",
    "parse_attacks",
    "per_point_start",
    "pgd_points",
    "predict",
    "resolve_code",
]

# the random starts of PGD / CW are drawn per point, in fixed blocks of 64 points (SEEDING)
START_BLOCK = 64


def parse_attacks(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """``"clean,pgd20,aa"`` or a sequence -> the columns in canonical order (clean always first)."""
    return parse_columns(attacks)


def column_settings(
    column: str,
    *,
    eps: float,
    norm: str = "Linf",
    seed: int = 0,
    batch_size: int = 256,
    chunk_size: int | None = None,
    aa_version: str = "standard",
) -> dict[str, Any]:
    """The attack settings of one column, as recorded in the result (step scales with eps;
    ``batch_size`` is AutoAttack's)."""
    ctx = SettingsContext(eps, norm, seed, batch_size, chunk_size, aa_version)
    return get_column(column).settings(ctx)


def resolve_code(ref: Callable[..., Any] | str) -> Callable[..., Any]:
    """A column's code: the callable itself, or the function a ``"module:function"`` names."""
    if callable(ref):
        return ref
    module, sep, name = ref.partition(":")
    if not sep:
        raise ConfigError(f"column code {ref!r} must be a callable or 'module:function'")
    return cast(Callable[..., Any], getattr(importlib.import_module(module), name))


def _derive_seed(seed: int, column: str, block: int) -> int:
    digest = hashlib.sha256(f"ardbench-eval:{seed}:{column}:block:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def per_point_start(
    x: Tensor, eps: float, norm: str, *, seed: int, column: str, start: int
) -> Tensor:
    """The uniform random starts of points ``start .. start + len(x)``: drawn on the CPU in
    fixed blocks of :data:`START_BLOCK` points (block ``k`` = points ``64k .. 64k + 63``, its
    generator seeded from ``(seed, column, k)``) and sliced, so a point gets the same start
    whatever batch it is in and whatever the device (about 1 ms per 64 CIFAR images)."""
    if len(x) == 0:
        return torch.zeros_like(x)
    gen = torch.Generator(device="cpu")
    zero = torch.zeros((START_BLOCK, *x.shape[1:]), dtype=torch.float32)
    first, last = start // START_BLOCK, (start + len(x) - 1) // START_BLOCK
    parts = []
    for block in range(first, last + 1):
        gen.manual_seed(_derive_seed(seed, column, block))
        parts.append(random_start(zero, eps, "uniform", norm, gen))
    offset = start - first * START_BLOCK
    return torch.cat(parts)[offset : offset + len(x)].to(x.device, x.dtype)


def fgsm_points(model: nn.Module, x: Tensor, y: Tensor, ctx: PointContext) -> Tensor:
    """FGSM: one signed-gradient step of eps on CE (under L2 one normalised step of eps)."""
    if ctx.norm == "Linf":
        return fgsm(x, ce_objective(model, y), ctx.eps)
    return pgd(
        x,
        ce_objective(model, y),
        eps=ctx.eps,
        step=ctx.eps,
        steps=1,
        random_start_kind="none",
        norm=ctx.norm,
    )


def _pgd(x: Tensor, objective: Callable[[Tensor], Tensor], ctx: PointContext) -> Tensor:
    s = ctx.settings
    return pgd(
        x,
        objective,
        eps=ctx.eps,
        step=float(s["step"]),
        steps=int(s["steps"]),
        clamp_start=True,
        norm=ctx.norm,
        delta0=per_point_start(
            x, ctx.eps, ctx.norm, seed=ctx.seed, column=ctx.column, start=ctx.start
        ),
    )


def pgd_points(model: nn.Module, x: Tensor, y: Tensor, ctx: PointContext) -> Tensor:
    """PGD on CE from the per-point uniform start (steps and step from the column's settings:
    PGD-20 for the built-in column, any other count for a registered variant)."""
    return _pgd(x, ce_objective(model, y), ctx)


def cw_points(model: nn.Module, x: Tensor, y: Tensor, ctx: PointContext) -> Tensor:
    """PGD on the CW-inf margin (kappa from the settings) from the per-point uniform start."""
    kappa = float(ctx.settings.get("kappa", CW_KAPPA))
    return _pgd(x, cw_objective(model, y, kappa), ctx)


def adversarial_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    column: str,
    *,
    eps: float,
    norm: str = "Linf",
    seed: int = 0,
    start: int = 0,
) -> Tensor:
    """x_adv of one batch for an attacked column (``start``: index of its first point).

    Detached, inside the eps-ball around ``x`` and in [0, 1]. The evaluator calls this per batch.
    """
    col = get_column(column)
    if col.attack is None:
        raise ValueError(f"adversarial_examples: column {column!r} has no per-batch attack")
    settings = col.settings(SettingsContext(eps, norm, seed))
    ctx = PointContext(column, eps, norm, seed, start, settings)
    return cast(Tensor, resolve_code(col.attack)(model, x, y, ctx))


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Top-1 labels of ``x`` (no gradients)."""
    with torch.no_grad():
        labels: Tensor = model(x).argmax(1)
    return labels


def ball_violation(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> float:
    """How far x_adv leaves the eps-ball or [0,1] (0 when it does not)."""
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    over = float((size - eps).clamp_min(0).max()) if len(d) else 0.0
    out = float(torch.maximum(-x_adv, x_adv - 1).clamp_min(0).max()) if len(d) else 0.0
    return max(over, out)


def class_accuracies(
    correct: Tensor, y: Tensor, num_classes: int
) -> tuple[list[float | None], float]:
    """Per-class accuracy of one column's per-point flags, and its worst class's accuracy.

    ``correct`` holds the column's point-wise worst-case flags, so the worst class of an
    attacked column is the class with the lowest robust accuracy (classes without points are
    ``None`` and take no part in the minimum; NaN when no class has points)."""
    correct, y = correct.cpu().bool(), y.cpu()
    per_class: list[float | None] = []
    for c in range(num_classes):
        mask = y == c
        count = int(mask.sum())
        per_class.append(int(correct[mask].sum()) / count if count else None)
    present = [v for v in per_class if v is not None]
    return per_class, (min(present) if present else float("nan"))
