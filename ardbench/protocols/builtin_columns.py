"""The built-in evaluation columns: clean, FGSM, PGD-20, CW-inf and AutoAttack ``standard``.

========  =====================================================================================
clean     top-1 accuracy
fgsm      x' = clamp(x + eps * sign grad CE, 0, 1); no random start (step = eps)
pgd20     20 steps of step eps/4 (2/255 at 8/255), uniform start clamped to [0,1], CE, 1 restart
cw        30 steps of step eps/4, uniform start clamped, CW-inf margin (kappa = 50, over the C
          logits: IAD's ``attack_generator``), 1 restart
aa        AutoAttack ``standard`` (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5000
          queries) from the PyPI package ``pyautoattack`` (= fra31/auto-attack@a392200)
========  =====================================================================================

Their code lives in :mod:`ardbench.eval.columns` and :mod:`ardbench.eval.autoattack`, named here
by reference so that protocols never import the evaluator. Records and protocols existed with
exactly these five, so none is ``later``.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Any

from .column import Column, SettingsContext

__all__ = [
    "AA_ATTACKS",
    "BUILTIN_COLUMNS",
    "CW_KAPPA",
    "POINTWISE",
    "PRECISION",
    "SEEDING",
    "pgd_settings",
]

# How the PGD / CW random starts are drawn: per point (in fixed blocks of 64 points, whatever
# the batches), on the CPU, so the per-point results do not depend on the batch size, the
# chunking or the device's random number generator (records made before this scheme say
# "per batch from (seed, column, first index)").
SEEDING = "per point: blocks of 64 points from (seed, column, index // 64), drawn on the CPU"
PRECISION = "fp32 (TF32 off for convolutions and matmuls)"
CW_KAPPA = 50.0
POINTWISE = "robust = correct on the clean point and on the adversarial point"
AA_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def _dist_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def _clean(ctx: SettingsContext) -> dict[str, Any]:
    return {"attack": "none"}


def _fgsm(ctx: SettingsContext) -> dict[str, Any]:
    return {
        "attack": "fgsm",
        "loss": "ce",
        "steps": 1,
        "step": ctx.eps,
        "step_rule": "eps",
        "random_start": "none",
        "restarts": 1,
        "norm": ctx.norm,
        "counts": POINTWISE,
    }


def pgd_settings(ctx: SettingsContext, *, loss: str, steps: int) -> dict[str, Any]:
    """A PGD column's settings: ``steps`` steps of eps/4 from a per-point uniform start clamped
    to [0, 1], one restart (PGD-20 and CW; a registered PGD variant can reuse it)."""
    return {
        "attack": "pgd",
        "loss": loss,
        "steps": steps,
        "step": ctx.eps / 4,
        "step_rule": "eps/4",
        "random_start": "uniform",
        "clamp_start": True,
        "restarts": 1,
        "norm": ctx.norm,
        "seeding": SEEDING,
        "counts": POINTWISE,
    }


def _pgd20(ctx: SettingsContext) -> dict[str, Any]:
    return pgd_settings(ctx, loss="ce", steps=20)


def _cw(ctx: SettingsContext) -> dict[str, Any]:
    return {
        **pgd_settings(ctx, loss="cw_margin", steps=30),
        "kappa": CW_KAPPA,
        "margin_over": "all C logits (IAD attack_generator)",
    }


def _aa(ctx: SettingsContext) -> dict[str, Any]:
    return {
        "attack": "autoattack",
        "version": ctx.aa_version,
        "package": "pyautoattack",
        "package_version": _dist_version("pyautoattack"),
        "attacks": list(AA_ATTACKS) if ctx.aa_version == "standard" else None,
        "apgd_ce": {"n_iter": 100, "restarts": 1},
        "apgd_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
        "fab_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
        "square": {"n_queries": 5000, "p_init": 0.8},
        "seed": ctx.seed,
        "batch_size": ctx.aa_batch_size,
        "chunk_size": ctx.chunk_size,
        "norm": ctx.norm,
        "counts": "robust = correct clean and every attack failed (AutoAttack's own flags)",
    }


BUILTIN_COLUMNS = (
    Column("clean", "Clean", _clean, model_info="clean", later=False, description="top-1"),
    Column(
        "fgsm",
        "FGSM",
        _fgsm,
        attack="ardbench.eval.columns:fgsm_points",
        later=False,
        description="one signed-gradient step of eps",
    ),
    Column(
        "pgd20",
        "PGD-20",
        _pgd20,
        attack="ardbench.eval.columns:pgd_points",
        aliases=("pgd", "pgd-20"),
        later=False,
        description="PGD-20, step eps/4, CE",
    ),
    Column(
        "cw",
        "CW∞",
        _cw,
        attack="ardbench.eval.columns:cw_points",
        aliases=("cw_inf", "cwinf"),
        later=False,
        description="PGD-30 on the CW-inf margin",
    ),
    Column(
        "aa",
        "AA",
        _aa,
        runner="ardbench.eval.autoattack:aa_runner",
        aliases=("autoattack",),
        model_info="autoattack",
        steps_label="AA std",
        later=False,
        description="AutoAttack standard (pyautoattack)",
    ),
)
