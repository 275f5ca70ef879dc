"""AdaIAD: AdaAD's attack with an IAD-I style loss (Huang et al.), as the official code runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaad import AdaADReduction, adaad_objective, resolve_reduction
from .base import Batch, Method, MethodConfig, StepContext, register_method
from .config import Fraction, NonNegative, NonNegativeInt, Positive
from .iad import trust_weights
from .losses import kl_div, kl_per_sample


@dataclass(frozen=True)
class AdaIADConfig(MethodConfig):
    tau: Positive = 30.0
    alpha: Fraction = 1.0
    beta: NonNegative = 0.1
    begin: NonNegativeInt = 60
    pre_begin_loss: Literal["iad_tau30", "adaad"] = "iad_tau30"
    adaad_kl_reduction: AdaADReduction = "per_dataset"  # pre_begin_loss: adaad only
    introspection_target_detach: bool = False
    iad1_weight_teacher_term: bool = False
    run_zero_weight_branches: bool = True
    attack_teacher_grad: bool = True


@register_method("adaiad")
class AdaIAD(Method[AdaIADConfig]):
    """AdaIAD: AdaAD's attack with an IAD-I style loss (Huang et al., CVPR 2023). Official code:
    boyellow/AdaAD@9e5c6e5 (``main.py --method AdaAD_with_IAD1``).

    What the code computes (not "AdaAD, then IAD-I after epoch 60"): for the *whole* run the
    teacher term is tau^2 KL_batchmean at tau 30 on T(x') (both datasets), and from 0-based
    epoch ``begin`` = 60 on the introspection term is added (keys ``kl_adv``, ``kl_intro``,
    ``ce_nat``)::

        kl_adv   = alpha * tau^2 * (1/B) sum_i KL_i(softmax(T(x')/tau) || softmax(S(x')/tau))
        kl_intro = alpha * (1/B) sum_i (1 - w_i) KL_i(softmax(S(x)) || softmax(S(x')))  [epoch >= begin]
        ce_nat   = (1 - alpha) * CE(S(x), y)

    w_i = sg(softmax(T(x'_i))[y_i])^beta (tau-free); tau 30, alpha 1, beta 0.1, begin 60.
    Forwards in order, all train mode: S(x) (unused by the loss: BN statistics only), S(x'),
    [S(x) for kl_intro], S(x) for the weight-0 CE. T(x') under ``no_grad``, eval mode.
    Inner maximisation: AdaAD's (see ``adaad``), same arguments.

    Quirk flags (faithful default first):

    - ``pre_begin_loss``: ``iad_tau30`` (as coded: the tau-30 term from epoch 0) | ``adaad``
      (before ``begin`` the AdaAD term KL_red(softmax(T(x')) || softmax(S(x'))) at tau 1 with
      the per-dataset reduction, the reading "AdaAD, then IAD-I").
    - ``introspection_target_detach``: ``False`` (S(x) is a fresh, non-detached forward) |
      ``True``.
    - ``iad1_weight_teacher_term``: ``False`` (the teacher term is not weighted by w_i) |
      ``True``.
    - ``run_zero_weight_branches``: ``True`` runs the unused S(x) forward and the weight-0 CE's
      S(x) forward (BN statistics) | ``False`` skips them (no ``ce_nat`` at alpha 1).
    - ``attack_teacher_grad``: as ``adaad``.
    - Protocol: ``adaiad-cifar10`` (= AdaAD's, ardbench.protocols).

    Deviations from the official code: T(x') is computed once under ``no_grad`` (the code
    forwards it twice, ``guide`` and ``teacher_outputs``, without ``no_grad``, so its backward
    also fills never-used teacher gradients: cost only); checkpoints as ``adaad``.
    """

    paper = "Huang et al., CVPR 2023"
    needs_teacher = True
    teacher_in_attack = True

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        cfg = self.config
        x, y = batch.x, batch.y
        introspect = ctx.epoch >= cfg.begin
        x_adv = ctx.attack_fn(x, adaad_objective(student, teacher, cfg.attack_teacher_grad))
        if cfg.run_zero_weight_branches:
            with torch.no_grad():
                student(x)  # `ori_outputs`: unused by the loss, moves BN running statistics
        s_adv = student(x_adv)
        with torch.no_grad():
            t_adv = teacher(x_adv)
        if not introspect and cfg.pre_begin_loss == "adaad":
            red = resolve_reduction(cfg.adaad_kl_reduction, s_adv.shape[1])
            terms = {"kl_adv": cfg.alpha * kl_div(t_adv, s_adv, red)}
        else:
            kl_t = kl_per_sample(t_adv, s_adv, tau=cfg.tau)
            w = trust_weights(t_adv, y, cfg.beta).to(s_adv.dtype) if introspect else None
            if w is not None and cfg.iad1_weight_teacher_term:
                kl_t = w * kl_t
            terms = {"kl_adv": cfg.alpha * cfg.tau**2 * kl_t.mean()}
            if w is not None:
                target = student(x)
                if cfg.introspection_target_detach:
                    target = target.detach()
                terms["kl_intro"] = cfg.alpha * ((1.0 - w) * kl_per_sample(target, s_adv)).mean()
        if cfg.alpha != 1.0 or cfg.run_zero_weight_branches:
            terms["ce_nat"] = (1.0 - cfg.alpha) * F.cross_entropy(student(x), y)
        return terms
