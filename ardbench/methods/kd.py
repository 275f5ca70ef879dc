"""Knowledge distillation on clean inputs from the robust teacher.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531.
No official code for ARD's KD baseline; two reference implementations, chosen by ``kd_preset``:

- ``ard_lineage`` (default): RulinShao/AdversariallyRobustDistillation ``main.py`` ``kd`` mode:
  L = alpha * tau^2 * KL_mean_all(sm(T(x)/tau) || sm(S(x)/tau)) + (1 - alpha) * CE(S(x), y),
  alpha 0.5, tau 1.
- ``repdistiller``: HobbitLong/RepDistiller ``distiller_zoo/KD.py``:
  L = 0.1 * CE + 0.9 * tau^2 * KL_batchmean(...), tau 4 (recipe ``baselines/kd/repdistiller.yaml``
  carries its optimiser: lr 0.05, wd 5e-4, 240 epochs, batch 64).

``alpha``, ``tau`` and ``kl_reduction`` override the preset when set. Keys ``kl_nat``,
``ce_nat``. Deviations: none (RepDistiller's MobileNetV2 is a half-width ImageNet-style net;
ardbench uses the reference's CIFAR MobileNetV2 for every method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodConfig, StepContext, register_method
from .config import NonNegative, Positive
from .losses import KLReduction, kl_div

KD_PRESETS: dict[str, dict[str, float | str]] = {
    "ard_lineage": {"alpha": 0.5, "ce_weight": 0.5, "tau": 1.0, "kl_reduction": "mean_all"},
    "repdistiller": {"alpha": 0.9, "ce_weight": 0.1, "tau": 4.0, "kl_reduction": "batchmean"},
}


@dataclass(frozen=True)
class KDConfig(MethodConfig):
    kd_preset: Literal["ard_lineage", "repdistiller"] = "ard_lineage"
    alpha: NonNegative | None = None  # KL weight; None = the preset's
    ce_weight: NonNegative | None = None  # None = the preset's (1 - alpha in ard_lineage)
    tau: Positive | None = None
    kl_reduction: KLReduction | None = None

    def resolved(self) -> dict[str, float | str]:
        out: dict[str, float | str] = dict(KD_PRESETS[self.kd_preset])
        if self.alpha is not None:
            out["alpha"] = self.alpha
            if self.ce_weight is None and self.kd_preset == "ard_lineage":
                out["ce_weight"] = 1.0 - self.alpha
        for key in ("ce_weight", "tau", "kl_reduction"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@register_method("kd")
class KD(Method[KDConfig]):
    paper = "Hinton et al., 2015 (arXiv 1503.02531)"
    needs_teacher = True

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        p = self.config.resolved()
        tau = float(p["tau"])
        with torch.no_grad():
            t_logits = teacher(batch.x)
        s_logits = student(batch.x)
        kl = kl_div(t_logits, s_logits, str(p["kl_reduction"]), tau=tau)
        return {
            "kl_nat": float(p["alpha"]) * tau * tau * kl,
            "ce_nat": float(p["ce_weight"]) * F.cross_entropy(s_logits, batch.y),
        }
