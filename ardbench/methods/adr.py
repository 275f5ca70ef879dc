"""ADR: annealing self-distillation rectification (Wu, Wang, Chen, ICLR 2024), teacher-free."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Batch, Method, MethodConfig, SetupContext, StepContext, register_method
from .config import Fraction, Positive
from .losses import one_hot

_STATE = torch.float64  # the official schedules are numpy float64 arrays


def cosine_at(start: float, end: float, s: Tensor, total: int) -> Tensor:
    """util/utils.py ``cosine_scheduler`` without warm-up, at 0-based step s of ``total``:
    end + (start - end) / 2 * (1 + cos(pi s / total)), in float64 on s's device."""
    return end + 0.5 * (start - end) * (1.0 + torch.cos(math.pi * s.to(_STATE) / total))


def rectified_label(
    ema_logits: Tensor, y: Tensor, temperature: Tensor, interpolation: Tensor
) -> Tensor:
    """adr.py:32-48: p = softmax(E(x) / tau); lambda_i = clamp(I - (max_c p_ic - p_iy), 0, 1);
    y~ = lambda p + (1 - lambda) onehot(y). No gradient."""
    with torch.no_grad():
        p = F.softmax(ema_logits / temperature.to(ema_logits.dtype), dim=1)
        p_y = p.gather(1, y.unsqueeze(1))
        p_max = p.max(dim=1, keepdim=True).values
        lam = torch.clamp(interpolation.to(p.dtype) - (p_max - p_y), 0.0, 1.0)
        onehot = one_hot(y, p.shape[1], p.dtype)
        return lam * p + (1.0 - lam) * onehot


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy whose parameters are buffers: saved in the method's state dict, never seen
    by the optimiser (the method's ``parameters()`` stays empty)."""
    ema = copy.deepcopy(net)
    for module in ema.modules():
        for name, param in list(module._parameters.items()):
            if param is None:
                continue
            del module._parameters[name]
            module.register_buffer(name, param.detach().clone())
    return ema.eval()


@dataclass(frozen=True)
class ADRConfig(MethodConfig):
    ema_decay: Fraction = 0.995
    temperature_high: Positive = 2.5  # C100: 1.5; C10 + AWP: 2.5
    temperature_low: Positive = 2.0  # C100: 1.0; C10 + AWP: 1.5
    interpolation_low: Fraction = 0.7
    interpolation_high: Fraction = 0.95  # C10 + AWP: 0.85
    adr_ema_buffers: bool = True

    def __post_init__(self) -> None:
        if self.temperature_low > self.temperature_high:
            raise ConfigError("need temperature_low <= temperature_high (tau anneals down)")


@register_method("adr")
class ADR(Method[ADRConfig]):
    """Annealing Self-Distillation Rectification Improves Adversarial Training (Wu, Wang, Chen,
    ICLR 2024, https://arxiv.org/abs/2305.12118). Official code: yuyuwu5/ADR@515da0e
    (``src/adr.py``, ``src/advTrainer.py``, ``src/util/{utils,pgd_attack}.py``,
    ``config/cifar10/resnet18_pgd_sgd_adr.gin``). Teacher-free: a reference row.

    E: an exponential moving average of the student (timm ``ModelEmaV2``, decay 0.995,
    parameters and BatchNorm buffers, from the random initialisation, eval mode), updated after
    every optimiser step. At global step s (= epoch * steps_per_epoch + index) of S = E_run *
    steps_per_epoch, with cosine schedules tau_s: 2.5 -> 2.0 and I_s: 0.7 -> 0.95::

        p      = softmax(E(x) / tau_s)                     (clean augmented x, no gradient)
        lam_i  = clamp(I_s - (max_c p_ic - p_iy_i), 0, 1)
        y~     = lam p + (1 - lam) onehot(y)
        ce_adv = (1/B) sum_i -sum_c y~_ic log softmax(S(x'_i))_c

    x' = PGD maximising CE(S(x'), y~) with the rectified label (student in train mode: each
    attack forward moves BatchNorm statistics; uniform start clamped to [0, 1]; 10 x 2/255).

    State (all on the device, in the method's state dict, so a resume continues it): the EMA
    network (its parameters stored as buffers, so the optimiser never sees them) and the number
    of optimiser steps taken. The EMA update of step s-1 is applied at the start of step s, from
    the student's current weights: the same value as the official update after the optimiser
    step, and no step of the trainer is needed for it (the final update after the last step
    feeds no label and is not applied; the evaluated model is the student).

    Quirk flags (faithful default first):

    - ``adr_ema_buffers``: ``True`` (the EMA averages BatchNorm running statistics too, as
      ``ModelEmaV2`` does over the whole state dict) | ``False`` (buffers copied from the
      student).
    - ``ema_decay``, ``temperature_high`` / ``temperature_low``, ``interpolation_low`` /
      ``interpolation_high`` (CIFAR-100: tau 1.5 -> 1.0; +AWP: tau 2.5 -> 1.5, I 0.7 -> 0.85).
    - The protocol ``adr-cifar10``: attack in train mode, start clamped, SGD with Nesterov,
      wd 5e-4, x0.1 at 100 and 150, seed 0.

    Deviations from the official code: ardbench's ResNet-18 does not normalise its input (the
    official one divides by the CIFAR mean / std inside, create_model.py:10-14): an
    architecture difference, not a method key; ``drop_last`` is not set (391 steps per epoch,
    not 390); the TRADES base (``adv_train_mode = "TRADES"``) and AWP are not implemented.
    """

    paper = "Wu, Wang, Chen, ICLR 2024 (arXiv 2305.12118)"
    needs_teacher = False
    teacherless_note = "no teacher (reference row): self-distils from its own EMA"

    steps_done: Tensor

    def __init__(self, config: ADRConfig | None = None) -> None:
        super().__init__(config)
        self.ema: nn.Module | None = None
        self._param_names: frozenset[str] = frozenset()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64))

    def build(self, ctx: SetupContext) -> None:
        self.ema = frozen_copy(ctx.student)
        self._param_names = frozenset(name for name, _ in ctx.student.named_parameters())

    def param_groups(self, defaults: dict[str, object]) -> list[dict[str, object]]:
        return []  # the EMA is not trained

    @torch.no_grad()
    def _update_ema(self, ema: nn.Module, student: nn.Module) -> None:
        """timm ModelEmaV2.update from the student's current weights, skipped before the first
        optimiser step (decay 1 then: the EMA is the initial copy). Entries are paired by name,
        looked up at each call (moving the method or the student replaces buffer tensors)."""
        cfg = self.config
        started = self.steps_done > 0
        one = torch.ones((), dtype=_STATE, device=self.steps_done.device)
        decay = torch.where(started, one * cfg.ema_decay, one)
        rest = torch.where(started, one * (1.0 - cfg.ema_decay), one * 0.0)
        own = {k.removeprefix("_orig_mod."): v for k, v in student.state_dict().items()}
        for name, ema_v in ema.state_dict(keep_vars=True).items():
            model_v = own[name].detach()
            if name in self._param_names or cfg.adr_ema_buffers:
                # each entry in its own dtype, as timm's python-float decay
                dt = ema_v.dtype if ema_v.is_floating_point() else torch.float32
                ema_v.copy_(ema_v * decay.to(dt) + rest.to(dt) * model_v)
            else:
                ema_v.copy_(model_v)

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        cfg, ema = self.config, self.ema
        if ema is None:
            raise ValueError("adr: setup() has not built the EMA copy of the student")
        if ctx.steps_per_epoch is None:
            raise ValueError("adr anneals per step: the trainer must pass steps_per_epoch")
        self._update_ema(ema, student)
        total = ctx.total_epochs * ctx.steps_per_epoch
        s = self.steps_done
        tau = cosine_at(cfg.temperature_high, cfg.temperature_low, s, total)
        interp = cosine_at(cfg.interpolation_low, cfg.interpolation_high, s, total)
        self.steps_done.add_(1)
        x = batch.x
        ema.eval()
        with torch.no_grad():
            ema_logits = ema(x)
        target = rectified_label(ema_logits, batch.y, tau, interp)
        ctx.log(
            "label_weight", (target * one_hot(batch.y, target.shape[1], target.dtype)).sum(1).mean()
        )
        x_adv = ctx.attack_fn(x, lambda xa: F.cross_entropy(student(xa), target, reduction="sum"))
        return {"ce_adv": F.cross_entropy(student(x_adv), target)}
