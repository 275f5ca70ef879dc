"""TRADES.

Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML 2019, https://arxiv.org/abs/1901.08573. Official code: yaodongyu/TRADES
``trades.py``@9d308f1, ``train_trades_cifar10.py``@e20f7b9.

As coded: L = CE(S(x), y) + beta * KL_batchmean(sm(S(x)) || sm(S(x'))), where the KL target
S(x) is a *second* train-mode forward of the clean batch and is **not** detached (keys
``ce_nat``, ``kl_adv``). The attack maximises sum_i KL_i(sm(S(x)) || sm(S(x'))) with the student
in eval mode, recomputing S(x) at every step, from x + 0.001 N(0, I) without a start clamp.

Quirk flags: ``target_detach`` (false = faithful; true detaches the KL target),
``recompute_clean_in_attack`` (true = faithful; false computes S(x) once per attack, same
x' in eval mode, cheaper). The WRN recipe's eps 0.031 / step 0.007 is the protocol ``trades-cifar10``; the
``ard_lineage`` preset (8/255, 2/255, 200 epochs) is a recipe. Deviations: none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodConfig, StepContext, register_method
from .config import NonNegative


@dataclass(frozen=True)
class TRADESConfig(MethodConfig):
    beta: NonNegative = 6.0
    target_detach: bool = False
    recompute_clean_in_attack: bool = True


@register_method("trades")
class TRADES(Method[TRADESConfig]):
    paper = "Zhang et al., ICML 2019 (arXiv 1901.08573)"
    needs_teacher = False

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        cfg = self.config
        x, y = batch.x, batch.y

        fixed_target = None
        if not cfg.recompute_clean_in_attack:
            fixed_target = _clean_target_in_attack_mode(student, x, ctx)

        def objective(x_adv: Tensor) -> Tensor:
            target = student(x) if fixed_target is None else fixed_target
            log_q = F.log_softmax(student(x_adv), dim=1)
            return F.kl_div(log_q, F.softmax(target, dim=1), reduction="sum")

        x_adv = ctx.attack_fn(x, objective)
        logits_nat = student(x)
        ce = F.cross_entropy(logits_nat, y)
        target = student(x)  # second train-mode forward, as coded
        if cfg.target_detach:
            target = target.detach()
        log_q = F.log_softmax(student(x_adv), dim=1)
        kl = F.kl_div(log_q, F.softmax(target, dim=1), reduction="sum") / x.shape[0]
        return {"ce_nat": ce, "kl_adv": cfg.beta * kl}


def _clean_target_in_attack_mode(student: nn.Module, x: Tensor, ctx: StepContext) -> Tensor:
    """S(x) once, in the attack's BN mode, without a graph (recompute_clean_in_attack=false)."""
    was_training = student.training
    student.train(ctx.attack.student_mode == "train")
    try:
        with torch.no_grad():
            target: Tensor = student(x)
            return target
    finally:
        student.train(was_training)
