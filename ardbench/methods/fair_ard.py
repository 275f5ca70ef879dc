"""Fair-ARD: per-class weights from attack survival, over ARD, IAD, RSLAD or MTARD (Yue et al.)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import (
    Batch,
    Method,
    MethodConfig,
    SetupContext,
    StepContext,
    get_method,
    register_method,
)
from .config import NonNegative, Positive
from .iad import trust_weights
from .losses import kl_per_sample, one_hot
from .mtard import MTARD, MTARDConfig

BASES = ("ard", "iad", "rslad", "mtard")
# the weight formula's epsilon as each script codes it: (1 / (kappa + 1e-5))^beta, except
# Fair-RSLAD.py:99 (1 / kappa)^beta
_WEIGHT_EPS = {"ard": 1e-5, "iad": 1e-5, "rslad": 0.0, "mtard": 1e-5}


def per_sample_kl(target: Tensor, student: Tensor, reduction: str, tau: float = 1.0) -> Tensor:
    """Each row's share of a KL reduction, shape (B,): the batch loss is its mean.

    ``mean_all`` = KL_i / C (a per-row ``nn.KLDivLoss()``), ``batchmean`` = KL_i, ``rslad`` =
    sum_c (-p log q + p log(p + 1e-5)) / C (x10 for C = 100), as the Fair-* scripts' per-row loops.
    """
    num_classes = student.shape[1]
    if reduction == "rslad":
        p = F.softmax(target / tau, dim=1)
        log_q = F.log_softmax(student / tau, dim=1)
        scale = 10.0 if num_classes == 100 else 1.0
        return scale * (-p * log_q + torch.log(p + 1e-5) * p).sum(1) / num_classes
    kl = kl_per_sample(target, student, tau=tau)
    return kl / num_classes if reduction == "mean_all" else kl


@dataclass(frozen=True)
class FairARDConfig(MethodConfig):
    base: Literal["ard", "iad", "rslad", "mtard"] = "ard"
    base_config: dict[str, Any] = field(default_factory=dict)
    beta: NonNegative = 2.0
    weight_eps: NonNegative | None = None  # None: as the base's script (1e-5; rslad 0)
    weight_min: Positive = 5 / 6
    weight_max: Positive = 5 / 2
    fair_mtard_nat_target: Literal["adv_teacher_on_adv", "nat_teacher_on_clean"] = (
        "adv_teacher_on_adv"
    )

    def __post_init__(self) -> None:
        base_cfg = get_method(self.base).Config.from_dict(
            self.base_config, where=f"fair_ard base_config ({self.base})"
        )
        if self.base == "iad" and getattr(base_cfg, "variant", "I") != "I":
            raise ConfigError("fair_ard base iad is IAD-I only (Fair-IAD.py); drop variant")
        if self.base == "mtard" and getattr(base_cfg, "b_mtard", False):
            raise ConfigError("fair_ard base mtard has no B-MTARD form; drop b_mtard")
        if (
            self.base == "mtard"
            and self.fair_mtard_nat_target == "nat_teacher_on_clean"
            and not getattr(base_cfg, "natural_teacher", None)
        ):
            raise ConfigError(
                "fair_mtard_nat_target nat_teacher_on_clean needs a clean teacher: set "
                "base_config.natural_teacher to a model spec"
            )
        if self.weight_min > self.weight_max:
            raise ConfigError("need weight_min <= weight_max")
        object.__setattr__(self, "base_config", base_cfg.to_dict())

    @property
    def eps(self) -> float:
        return _WEIGHT_EPS[self.base] if self.weight_eps is None else self.weight_eps


@register_method("fair_ard")
class FairARD(Method[FairARDConfig]):
    """Revisiting Adversarial Robustness Distillation from the Perspective of Robust Fairness
    (Yue, Mou, Wang, Zhao, NeurIPS 2023, OpenReview ywrPcBEXdC). Official code:
    NISP-official/Fair-ARD@910c8cd (``Fair-{ARD,IAD,RSLAD,MTARD}.py``).

    Class weights (every base): kappa_i = the attack iterates k = 0..K-1 (the start counted, the
    final iterate not) at which argmax S = y_i, in the attack's student mode; over the epoch
    kappa_c = sum_{i in c} kappa_i / (N / C), N the samples seen. After each epoch::

        w_c = (1 / (kappa_c + eps))^beta,  rescaled to sum_c w_c = C,  clamped to [5/6, 5/2]

    beta 2, eps 1e-5 (Fair-RSLAD: 0, ``weight_eps``); w = 1 in the first epoch. Every term of
    sample i is multiplied by w_{y_i}, each with the base's own per-row reduction (loss keys):

    - ``ard`` (Fair-ARD.py:136-148): ``kl_adv`` = alpha tau^2 mean_i w KL_i(T(x)/tau || S(x')/tau)
      / C, ``ce_nat`` = (1 - alpha) mean_i w CE_i(S(x)); ARD's attack (CE sum, train mode).
    - ``iad`` (Fair-IAD.py:163-199, per-row sums): ``kl_adv`` = alpha tau^2 mean_i w KL_i(T(x) ||
      S(x')); from epoch ``begin`` (60) also ``kl_intro`` = alpha mean_i w (1 - a_i) KL_i(S(x) ||
      S(x')) (S(x) not detached) and ``ce_adv`` = (1 - alpha) mean_i w CE_i(S(x')), a_i =
      softmax(T(x'_i))[y_i]^0.1; unlike IAD-I the introspection term is class-weighted and the
      CE is on S(x'). The unused forwards (``basicop`` S(x'), T(x'), S(x) before ``begin``) run
      with ``run_zero_weight_branches``.
    - ``rslad`` (Fair-RSLAD.py:110-149): ``kl_adv`` = 5/6 mean_i w r_i(T(x), S(x')), ``kl_nat``
      = 1/6 mean_i w r_i(T(x), S(x)), r_i the ``rslad`` row share; RSLAD's attack (KL sum to
      T(x), 0.001-Gaussian start, eval mode).
    - ``mtard`` (Fair-MTARD.py:125-188): ``kl_adv`` = w_adv mean_i w r_i(T(x'), S(x')),
      ``kl_nat`` = w_nat mean_i w r_i(T(x'), S(x)): **both terms distil T(x')**
      (``fair_mtard_nat_target: adv_teacher_on_adv``; the clean teacher N(x) is computed and
      never used, so ardbench does not run it | ``nat_teacher_on_clean``: N(x) as MTARD).
      MTARD's per-iteration weight rule on the class-weighted losses; attack CE mean, eval mode.

    State on the device (buffers, saved in checkpoints): per-class survival counts, samples
    seen, the weights and the epoch the counts belong to. The weights are recomputed at the
    first step of each epoch from the previous epoch's counts (tensor operations, no host read),
    so a resumed run continues them exactly.

    Quirk flags (faithful default first): ``weight_eps`` (None: the script's), ``beta``,
    ``weight_min``/``weight_max``, ``fair_mtard_nat_target``; the base's flags in
    ``base_config`` (its Config's keys and defaults, e.g. ``run_zero_weight_branches``).

    Deviations from the official code: the per-sample Python loops are vectorised; the attack
    takes input-only gradients; kappa_c divides by the samples seen in the epoch (the scripts:
    the dataset size, equal without ``drop_last``); the official scripts save every epoch and
    select none, ardbench evaluates the last.
    """

    paper = "Yue et al., NeurIPS 2023 (OpenReview ywrPcBEXdC)"
    needs_teacher = True
    teacher_in_attack = False

    kappa_sum: Tensor
    seen: Tensor
    class_w: Tensor
    state_epoch: Tensor

    def __init__(self, config: FairARDConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        # the base's resolved Config (ARDConfig, IADConfig, RSLADConfig or MTARDConfig)
        self.base_cfg: Any = get_method(cfg.base).Config.from_dict(cfg.base_config)
        # MTARD's weight rule and its state (w_nat, the first iteration's losses)
        self.mtard = MTARD(self.base_cfg) if isinstance(self.base_cfg, MTARDConfig) else None
        self._make_state(10)

    def _make_state(self, num_classes: int) -> None:
        self.register_buffer("kappa_sum", torch.zeros(num_classes, dtype=torch.int64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("class_w", torch.ones(num_classes))
        self.register_buffer("state_epoch", torch.tensor(-1, dtype=torch.int64))

    def build(self, ctx: SetupContext) -> None:
        self._make_state(ctx.num_classes)

    def extra_models(self) -> dict[str, str | None]:
        if (
            self.config.base == "mtard"
            and self.config.fair_mtard_nat_target != "adv_teacher_on_adv"
        ):
            return {"natural": getattr(self.base_cfg, "natural_teacher", None)}
        return {}

    def capture_key(self, epoch: int) -> int:
        """The epoch: the rollover writes it into the state, and IAD branches on it."""
        return epoch

    def class_weights(self) -> Tensor:
        """w_c from the held counts (the official ``weight_assign``)."""
        cfg = self.config
        num_classes = self.kappa_sum.shape[0]
        kappa = self.kappa_sum.float() / (self.seen.float() / num_classes)
        w = (1.0 / (kappa + cfg.eps)) ** cfg.beta
        w = w * (num_classes / w.sum())
        return w.clamp(cfg.weight_min, cfg.weight_max)

    @torch.no_grad()
    def _rollover(self, epoch: int) -> None:
        """At an epoch's first step: weights from the previous epoch's counts, counts reset."""
        new = self.state_epoch != epoch
        update = new & (self.state_epoch >= 0)
        self.class_w.copy_(torch.where(update, self.class_weights(), self.class_w))
        self.kappa_sum.mul_((~new).long())
        self.seen.mul_((~new).long())
        self.state_epoch.fill_(epoch)

    def _counting(
        self, student: nn.Module, y: Tensor, loss: Callable[[Tensor], Tensor]
    ) -> Callable[[Tensor], Tensor]:
        """An attack objective that also counts, per sample, iterates still classified right."""
        onehot = one_hot(y, self.kappa_sum.shape[0])

        def objective(x_adv: Tensor) -> Tensor:
            logits = student(x_adv)
            with torch.no_grad():
                right = (logits.argmax(1) == y).long()
                self.kappa_sum.add_((onehot * right[:, None]).sum(0))
            return loss(logits)

        return objective

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        self._rollover(ctx.epoch)
        with torch.no_grad():
            self.seen.add_(batch.y.shape[0])
        w = self.class_w[batch.y].to(batch.x.dtype)
        ctx.log("fair_w_min", self.class_w.min().detach())
        ctx.log("fair_w_max", self.class_w.max().detach())
        run = {"ard": self._ard, "iad": self._iad, "rslad": self._rslad, "mtard": self._mtard}
        return run[self.config.base](student, teacher, batch, ctx, w)

    def _ard(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext, w: Tensor
    ) -> dict[str, Tensor]:
        b = self.base_cfg
        x, y = batch.x, batch.y
        obj = self._counting(student, y, lambda s: F.cross_entropy(s, y, reduction="sum"))
        x_adv = ctx.attack_fn(x, obj)
        s_adv = student(x_adv)
        with torch.no_grad():
            t = teacher(x if b.teacher_input == "clean" else x_adv)
        kl = per_sample_kl(t, s_adv, b.kl_reduction, tau=b.tau)
        terms = {"kl_adv": b.alpha * b.tau**2 * (w * kl).mean()}
        if b.alpha != 1.0 or b.run_zero_weight_branches:
            ce = F.cross_entropy(student(x), y, reduction="none")
            terms["ce_nat"] = (1.0 - b.alpha) * (w * ce).mean()
        return terms

    def _iad(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext, w: Tensor
    ) -> dict[str, Tensor]:
        b = self.base_cfg
        x, y = batch.x, batch.y
        introspect = ctx.epoch >= b.warmup_end
        with torch.no_grad():
            t_nat = teacher(x)
        obj = self._counting(student, y, lambda s: F.cross_entropy(s, y, reduction="sum"))
        x_adv = ctx.attack_fn(x, obj)
        s_adv = student(x_adv)
        s_nat = student(x) if introspect or b.run_zero_weight_branches else None
        t_adv = None
        if introspect or b.run_zero_weight_branches:
            with torch.no_grad():
                if b.run_zero_weight_branches:
                    student(x_adv)  # the official unused `basicop` (moves BN statistics)
                t_adv = teacher(x_adv)  # `guide`
        kl_t = kl_per_sample(t_nat, s_adv, tau=b.tau)
        if not introspect:
            return {"kl_adv": b.alpha * b.tau**2 * (w * kl_t).mean()}
        assert s_nat is not None and t_adv is not None
        a = trust_weights(t_adv, y, b.beta).to(s_adv.dtype)
        ctx.log("iad_trust_mean", a.mean().detach())
        if b.iad1_weight_teacher_term:
            kl_t = a * kl_t
        target = s_nat.detach() if b.introspection_target_detach else s_nat
        intro = (1.0 - a) * kl_per_sample(target, s_adv)
        ce = F.cross_entropy(s_adv, y, reduction="none")
        return {
            "kl_adv": b.alpha * b.tau**2 * (w * kl_t).mean(),
            "kl_intro": b.alpha * (w * intro).mean(),
            "ce_adv": (1.0 - b.alpha) * (w * ce).mean(),
        }

    def _rslad(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext, w: Tensor
    ) -> dict[str, Tensor]:
        b = self.base_cfg
        x, y = batch.x, batch.y
        with torch.no_grad():
            t_nat = teacher(x)
        obj = self._counting(student, y, lambda s: kl_per_sample(t_nat, s).sum())
        x_adv = ctx.attack_fn(x, obj)
        s_adv = student(x_adv)
        s_nat = student(x)
        red = b.kl_reduction
        return {
            "kl_adv": b.adv_weight * (w * per_sample_kl(t_nat, s_adv, red)).mean(),
            "kl_nat": b.nat_weight * (w * per_sample_kl(t_nat, s_nat, red)).mean(),
        }

    def _mtard(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext, w: Tensor
    ) -> dict[str, Tensor]:
        b, mtard = self.base_cfg, self.mtard
        assert mtard is not None
        x, y = batch.x, batch.y
        n_nat = None
        if self.config.fair_mtard_nat_target == "nat_teacher_on_clean":
            natural = ctx.extras.get("natural")
            if natural is None:
                raise ValueError(
                    "fair_ard (mtard) needs the clean teacher in ctx.extras['natural']"
                )
            with torch.no_grad():
                n_nat = natural(x)
        obj = self._counting(student, y, lambda s: F.cross_entropy(s, y))
        x_adv = ctx.attack_fn(x, obj)
        s_adv = student(x_adv)
        with torch.no_grad():
            t_adv = teacher(x_adv)
        s_nat = student(x)
        red = b.kl_reduction
        kl_adv = (w * per_sample_kl(t_adv, s_adv, red)).mean()
        kl_nat = (w * per_sample_kl(t_adv if n_nat is None else n_nat, s_nat, red)).mean()
        mtard._update_weights(torch.stack([kl_adv.detach(), kl_nat.detach()]), ctx.epoch)
        w_nat = mtard.w_nat.to(kl_nat.dtype).clone()
        return {"kl_adv": (1.0 - w_nat) * kl_adv, "kl_nat": w_nat * kl_nat}
