"""The columns: their settings, the per-point random starts, and the clean / FGSM / PGD-20 / CW
adversarial points (AutoAttack is :mod:`ardbench.eval.autoattack`).

========  =====================================================================================
clean     top-1 accuracy
fgsm      x' = clamp(x + eps * sign grad CE, 0, 1); no random start (step = eps)
pgd20     20 steps of step eps/4 (2/255 at 8/255), uniform start clamped to [0,1], CE, 1 restart
cw        30 steps of step eps/4, uniform start clamped, CW-inf margin (kappa = 50, over the C
          logits: IAD's ``attack_generator``), 1 restart
aa        AutoAttack ``standard`` (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5000
          queries) from the PyPI package ``pyautoattack`` (= fra31/auto-attack@a392200)
========  =====================================================================================

Accuracy is point-wise worst case, as RobustBench counts AutoAttack: a point counts as robust in
an attacked column only when it is classified correctly both clean and at the adversarial point
(so every attacked column is <= clean, per class too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import ce_objective, cw_objective, fgsm, pgd, random_start
from ..errors import ConfigError
from .result import AA_ATTACKS, COLUMNS, dist_version

__all__ = [
    "CW_KAPPA",
    "PRECISION",
    "SEEDING",
    "START_BLOCK",
    "adversarial_examples",
    "ball_violation",
    "class_accuracies",
    "column_settings",
    "parse_attacks",
    "per_point_start",
    "predict",
]

# How the PGD / CW random starts are drawn: per point (in fixed blocks of 64 points, whatever
# the batches), on the CPU, so the per-point results do not depend on the batch size, the
# chunking or the device's random number generator (records made before this scheme say
# "per batch from (seed, column, first index)").
START_BLOCK = 64
SEEDING = "per point: blocks of 64 points from (seed, column, index // 64), drawn on the CPU"
PRECISION = "fp32 (TF32 off for convolutions and matmuls)"
CW_KAPPA = 50.0
_POINTWISE = "robust = correct on the clean point and on the adversarial point"
_ALIASES = {"pgd": "pgd20", "pgd-20": "pgd20", "cw_inf": "cw", "cwinf": "cw", "autoattack": "aa"}


def parse_attacks(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """``"clean,pgd20,aa"`` or a sequence -> the columns in canonical order (clean always first)."""
    names = [
        a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)
    ]
    names = [_ALIASES.get(a, a) for a in names if a]
    unknown = [a for a in names if a not in COLUMNS]
    if unknown:
        raise ConfigError(
            f"unknown attack column(s) {', '.join(map(repr, unknown))}",
            hint=f"known: {', '.join(COLUMNS)}",
        )
    return tuple(c for c in COLUMNS if c in names or c == "clean")


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
    """The attack settings of one column, as recorded in the result (step scales with eps)."""
    if column == "clean":
        return {"attack": "none"}
    if column == "fgsm":
        return {
            "attack": "fgsm",
            "loss": "ce",
            "steps": 1,
            "step": eps,
            "step_rule": "eps",
            "random_start": "none",
            "restarts": 1,
            "norm": norm,
            "counts": _POINTWISE,
        }
    if column in ("pgd20", "cw"):
        s: dict[str, Any] = {
            "attack": "pgd",
            "loss": "ce" if column == "pgd20" else "cw_margin",
            "steps": 20 if column == "pgd20" else 30,
            "step": eps / 4,
            "step_rule": "eps/4",
            "random_start": "uniform",
            "clamp_start": True,
            "restarts": 1,
            "norm": norm,
            "seeding": SEEDING,
            "counts": _POINTWISE,
        }
        if column == "cw":
            s["kappa"] = CW_KAPPA
            s["margin_over"] = "all C logits (IAD attack_generator)"
        return s
    if column == "aa":
        return {
            "attack": "autoattack",
            "version": aa_version,
            "package": "pyautoattack",
            "package_version": dist_version("pyautoattack"),
            "attacks": list(AA_ATTACKS) if aa_version == "standard" else None,
            "apgd_ce": {"n_iter": 100, "restarts": 1},
            "apgd_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
            "fab_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
            "square": {"n_queries": 5000, "p_init": 0.8},
            "seed": seed,
            "batch_size": batch_size,
            "chunk_size": chunk_size,
            "norm": norm,
            "counts": "robust = correct clean and every attack failed (AutoAttack's own flags)",
        }
    raise ValueError(f"unknown column {column!r}")


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
    """x_adv of one batch for ``fgsm`` / ``pgd20`` / ``cw`` (``start``: index of its first point).

    Detached, inside the eps-ball around ``x`` and in [0, 1]. The evaluator calls this per batch.
    """
    if column == "fgsm":
        if norm == "Linf":
            return fgsm(x, ce_objective(model, y), eps)
        return pgd(
            x,
            ce_objective(model, y),
            eps=eps,
            step=eps,
            steps=1,
            random_start_kind="none",
            norm=norm,
        )
    if column in ("pgd20", "cw"):
        s = column_settings(column, eps=eps, norm=norm)
        objective = (
            ce_objective(model, y) if column == "pgd20" else cw_objective(model, y, CW_KAPPA)
        )
        return pgd(
            x,
            objective,
            eps=eps,
            step=s["step"],
            steps=s["steps"],
            clamp_start=True,
            norm=norm,
            delta0=per_point_start(x, eps, norm, seed=seed, column=column, start=start),
        )
    raise ValueError(f"adversarial_examples: {column!r} is not fgsm, pgd20 or cw")


def predict(model: nn.Module, x: Tensor) -> Tensor:
    """Top-1 labels of ``x`` (no gradients)."""
    with torch.no_grad():
        return model(x).argmax(1)


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
