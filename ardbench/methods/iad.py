"""IAD: Introspective Adversarial Distillation (Zhu et al.), variants I and II."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import ce_objective
from ..errors import ConfigError
from .base import Batch, Method, MethodConfig, StepContext, register_method
from .config import Fraction, NonNegative, NonNegativeInt, Positive
from .losses import kl_per_sample

_DEFAULT_BEGIN = {"I": 60, "II": 40}


def trust_weights(teacher_adv_logits: Tensor, y: Tensor, beta: float) -> Tensor:
    """w_i = sg(softmax(T(x'_i))[y_i])^beta, per sample (the official loop uses ``.item()``)."""
    with torch.no_grad():
        p_y = F.softmax(teacher_adv_logits, dim=1).gather(1, y[:, None]).squeeze(1)
        return p_y.pow(beta)


@dataclass(frozen=True)
class IADConfig(MethodConfig):
    variant: Literal["I", "II"] = "I"
    alpha: Fraction = 1.0  # IAD-I
    alpha1: Fraction = 0.5  # IAD-II, robust teacher
    alpha2: Fraction = 0.25  # IAD-II, natural teacher
    tau: Positive = 1.0
    beta: NonNegative = 0.1
    begin: NonNegativeInt | None = None  # None: 60 (I) / 40 (II)
    natural_teacher: str | None = None  # model spec of N, required by IAD-II
    iad1_weight_teacher_term: bool = False
    introspection_target_detach: bool = False
    run_zero_weight_branches: bool = True

    def __post_init__(self) -> None:
        if self.alpha1 + self.alpha2 > 1.0:  # the CE term's weight is 1 - alpha1 - alpha2
            raise ConfigError(f"alpha1 + alpha2 must be <= 1; got {self.alpha1} + {self.alpha2}")
        if self.variant == "II" and not self.natural_teacher:
            raise ConfigError(
                "variant II needs a naturally trained teacher: set "
                "method_config.natural_teacher to a model spec (e.g. run:ID of a `natural` "
                "run, or resnet18:PATH)"
            )

    @property
    def warmup_end(self) -> int:
        return _DEFAULT_BEGIN[self.variant] if self.begin is None else self.begin


@register_method("iad")
class IAD(Method[IADConfig]):
    """Reliable Adversarial Distillation with Unreliable Teachers (Zhu et al., ICLR 2022,
    https://arxiv.org/abs/2106.04928; Introspective Adversarial Distillation). Official code:
    ZFancy/IAD@a8091a8 (``IAD-I.py`` on ARD, ``IAD-II.py`` on AKD2).

    Trust weight ``w_i = sg(softmax(T(x'_i))[y_i])^beta`` (tau-free softmax), used from epoch
    ``begin`` on (0-based ``ctx.epoch >= begin``; ``begin`` defaults to 60 for I, 40 for II).
    KL terms are per-sample sums over classes, averaged over the batch (``batchmean``).

    **IAD-I** (``variant: I``; keys ``kl_adv``, ``kl_intro``, ``ce_nat``)::

        kl_adv   = alpha * tau^2 * (1/B) sum_i KL_i(softmax(T(x)/tau) || softmax(S(x')/tau))
        kl_intro = alpha * (1/B) sum_i (1 - w_i) KL_i(softmax(S(x)) || softmax(S(x')))  [epoch >= begin]
        ce_nat   = (1 - alpha) * CE(S(x), y)

    **IAD-II** (``variant: II``; needs ``natural_teacher``; keys ``ce_adv``, ``kl_adv``,
    ``kl_intro``, ``kl_nt_adv``)::

        ce_adv    = (1 - alpha1 - alpha2) * CE(S(x'), y)
        kl_adv    = alpha1 * tau^2 * (1/B) sum_i w_i KL_i(softmax(T(x')/tau) || softmax(S(x')/tau))
        kl_intro  = alpha1 * tau^2 * (1/B) sum_i (1 - w_i) KL_i(softmax(S(x)) || softmax(S(x')))  [epoch >= begin]
        kl_nt_adv = alpha2 * tau^2 * (1/B) sum_i KL_i(softmax(N(x')/tau) || softmax(S(x')/tau))

    with w_i = 1 before ``begin`` (and no ``kl_intro``), N the naturally trained teacher
    (``ctx.extras["natural"]``, declared through ``extra_models``).

    Inner maximisation: ARD's (PGD on the student, CE summed, uniform start, student in train
    mode); S(x') is a train-mode forward after the attack; the introspection target S(x) and
    the CE's S(x) are separate train-mode forwards, as coded.

    Quirk flags (faithful default first, clean alternative second):

    - ``iad1_weight_teacher_term``: ``False`` (IAD-I as coded: the teacher term is *not*
      weighted by w_i) | ``True`` (w_i-weighted, as IAD-II does; the paper's IAD-I form is
      unverified). Ignored for IAD-II, which always weights.
    - ``introspection_target_detach``: ``False`` (the target softmax(S(x)) is a fresh,
      non-detached forward: gradients flow through both sides) | ``True`` (stop-gradient on
      the target; same value, different gradients).
    - ``run_zero_weight_branches`` (IAD-I): ``True`` runs the official code's unused forwards:
      the detached ``basicop = S(x')`` every batch (moves BN running statistics), T(x') before
      warm-up (cost only), and S(x) for the CE when 1 - alpha = 0 | ``False`` skips them (no
      ``ce_nat`` then).
    - Protocol quirks in the protocol ``iad-cifar10``: ``lr_schedule: ard_as_coded``, ``student_mode: train``.

    Deviations from the official code: IAD-II's second T(x') forward (``guide``, identical to
    ``teacher_outputs`` in eval mode) is not repeated (cost only); the attack takes input-only
    gradients; the official rule keeps the best test-PGD-10 checkpoint, ardbench the last.
    """

    paper = "Zhu et al., ICLR 2022 (arXiv 2106.04928)"
    needs_teacher = True
    teacher_in_attack = False

    def extra_models(self) -> dict[str, str | None]:
        cfg = self.config
        if cfg.variant == "II":
            assert cfg.natural_teacher is not None
            return {"natural": cfg.natural_teacher}
        return {}

    def capture_key(self, epoch: int) -> bool:
        """The step's computation changes once, when introspection starts."""
        return epoch >= self.config.warmup_end

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        cfg = self.config
        if cfg.variant == "I":
            return self._iad1(student, teacher, batch, ctx, cfg)
        return self._iad2(student, teacher, batch, ctx, cfg)

    def _introspection(
        self, student: nn.Module, x: Tensor, s_adv: Tensor, w: Tensor, cfg: IADConfig
    ) -> Tensor:
        """(1/B) sum_i (1 - w_i) KL_i(softmax(S(x)) || softmax(S(x'))), tau-free as coded."""
        target = student(x)
        if cfg.introspection_target_detach:
            target = target.detach()
        return ((1.0 - w) * kl_per_sample(target, s_adv)).mean()

    def _iad1(
        self,
        student: nn.Module,
        teacher: nn.Module,
        batch: Batch,
        ctx: StepContext,
        cfg: IADConfig,
    ) -> dict[str, Tensor]:
        x, y = batch.x, batch.y
        introspect = ctx.epoch >= cfg.warmup_end
        with torch.no_grad():
            t_nat = teacher(x)
        x_adv = ctx.attack_fn(x, ce_objective(student, y, reduction="sum"))
        s_adv = student(x_adv)
        if cfg.run_zero_weight_branches:
            with torch.no_grad():
                student(x_adv)  # the official `basicop`: unused, updates BN running stats
        w = None
        if introspect or cfg.run_zero_weight_branches:
            with torch.no_grad():
                t_adv = teacher(x_adv)  # `guide`: used only after warm-up
            if introspect:
                w = trust_weights(t_adv, y, cfg.beta).to(s_adv.dtype)
                ctx.log("iad_trust_mean", w.mean().detach())
        kl_t = kl_per_sample(t_nat, s_adv, tau=cfg.tau)
        if w is not None and cfg.iad1_weight_teacher_term:
            kl_t = w * kl_t
        terms = {"kl_adv": cfg.alpha * cfg.tau**2 * kl_t.mean()}
        if w is not None:
            terms["kl_intro"] = cfg.alpha * self._introspection(student, x, s_adv, w, cfg)
        if cfg.alpha != 1.0 or cfg.run_zero_weight_branches:
            terms["ce_nat"] = (1.0 - cfg.alpha) * F.cross_entropy(student(x), y)
        return terms

    def _iad2(
        self,
        student: nn.Module,
        teacher: nn.Module,
        batch: Batch,
        ctx: StepContext,
        cfg: IADConfig,
    ) -> dict[str, Tensor]:
        natural = ctx.extras.get("natural")
        if natural is None:
            raise ValueError(
                "iad variant II needs the natural teacher in ctx.extras['natural'] "
                f"(method_config.natural_teacher = {cfg.natural_teacher!r})"
            )
        x, y = batch.x, batch.y
        introspect = ctx.epoch >= cfg.warmup_end
        x_adv = ctx.attack_fn(x, ce_objective(student, y, reduction="sum"))
        s_adv = student(x_adv)
        with torch.no_grad():
            t_adv = teacher(x_adv)
            n_adv = natural(x_adv)
        a1, a2, tau2 = cfg.alpha1, cfg.alpha2, cfg.tau**2
        terms = {"ce_adv": (1.0 - a1 - a2) * F.cross_entropy(s_adv, y)}
        kl_t = kl_per_sample(t_adv, s_adv, tau=cfg.tau)
        if introspect:
            w = trust_weights(t_adv, y, cfg.beta).to(s_adv.dtype)
            ctx.log("iad_trust_mean", w.mean().detach())
            terms["kl_adv"] = a1 * tau2 * (w * kl_t).mean()
            terms["kl_intro"] = a1 * tau2 * self._introspection(student, x, s_adv, w, cfg)
        else:
            terms["kl_adv"] = a1 * tau2 * kl_t.mean()
        terms["kl_nt_adv"] = a2 * tau2 * kl_per_sample(n_adv, s_adv, tau=cfg.tau).mean()
        return terms
