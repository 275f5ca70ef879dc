"""PGD adversarial training.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083. Official code: MadryLab/cifar10_challenge
(TensorFlow). ardbench's faithful default follows the PyTorch recipe ZFancy/IAD
``pre_train/AT.py`` (preset ``iad_at``, IAD's teacher): uniform start clamped to [0,1], student in
eval mode during the attack, ``piecewise_epoch_plus_one`` schedule. Other presets are recipes in
``baselines/pgd_at/`` (``rice``: train-mode attack, wd 5e-4; ``pang``: gaussian start).

Deviations from the official code: IAD's attack calls ``loss.backward()`` (weight gradients
computed then discarded); ardbench takes input-only gradients: the same x_adv, cheaper.
The attack maximises the summed CE (sign ascent is invariant to the 1/B of a mean).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodConfig, StepContext, register_method


@register_method("pgd_at")
class PGDAT(Method[MethodConfig]):
    """L = CE(S(x'), y), x' = PGD on the student's CE (key ``ce_adv``)."""

    paper = "Madry et al., ICLR 2018 (arXiv 1706.06083)"
    needs_teacher = False

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        y = batch.y
        x_adv = ctx.attack_fn(batch.x, lambda xa: F.cross_entropy(student(xa), y, reduction="sum"))
        return {"ce_adv": F.cross_entropy(student(x_adv), y)}
