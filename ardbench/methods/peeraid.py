"""PeerAiD: a peer tutor trained jointly with the student (Jung et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodConfig, SetupContext, StepContext, register_method
from .config import NonNegative, Positive
from .losses import KLReduction, kl_div, kl_per_sample


@dataclass(frozen=True)
class PeerAiDConfig(MethodConfig):
    temperature: Positive = 5.0
    gamma1: NonNegative = 1.0
    gamma2: NonNegative = 0.1  # CIFAR-100 scripts: 1.0
    tau_r: Positive = 1.0
    lambda1: NonNegative = 0.0
    lambda2: NonNegative = 1.0
    lambda3: NonNegative = 1.0
    kl_reduction: KLReduction = "mean_all"
    peer_target_detach: bool = False
    nat_target_detach: bool = False
    student_adv_forwards: Literal[1, 2] = 2
    peer_lr_scale: NonNegative = 1.0
    peer_momentum: NonNegative | None = None  # None: the recipe's
    peer_weight_decay: NonNegative | None = None  # None: the recipe's


@register_method("peeraid")
class PeerAiD(Method[PeerAiDConfig]):
    """PeerAiD: Improving Adversarial Distillation from a Specialized Peer Tutor (Jung et
    al., CVPR 2024, https://arxiv.org/abs/2403.06668). Official code:
    jaewonalive/PeerAiD@cd12e92 (``main.py --kd``, ``attack_function.py``, ``utils/SWA.py``,
    ``training_scripts/*.sh``).

    No pretrained teacher: the peer P, a fresh network of the student's architecture (built in
    ``setup`` with ``student_factory``, initialised as that architecture initialises itself),
    is a submodule of the method, trained jointly. Keys ``peer_ce``, ``peer_kl`` (L_P) and
    ``ce_adv``, ``kl_peer``, ``kl_nat`` (L_S)::

        peer_ce = g1 * CE(P(x'), y)
        peer_kl = g2 * tr^2 * KL_mean_all(softmax(S(x')/tr) || softmax(P(x')/tr))
        ce_adv  = l1 * CE(S(x'), y)
        kl_peer = l2 * T^2 * KL_mean_all(softmax(sg P(x')/T) || softmax(S(x')/T))
        kl_nat  = l3 * T^2 * KL_mean_all(softmax(S(x)/T)     || softmax(S(x')/T))

    C10 ResNet-18 (the scripts): T 5, g1 1, g2 0.1 (C100: 1), tr 1, l 0 / 1 / 1. The target
    S(x') of ``peer_kl`` is not detached (the student also gets gradient from L_P, as coded),
    nor is S(x) in ``kl_nat``. Forwards, all train mode unless said: P(x) in eval mode under
    ``no_grad`` (the attack's target), the attack, P(x'), S(x') for L_P, a second S(x') for L_S,
    S(x). One backward of L_P + L_S (the trainer sums the terms); the official code then steps
    two SGD optimisers with identical settings (lr 0.1, momentum 0.9, wd 2e-4, the same
    schedule), which is the same update as one SGD over both parameter sets: by default the
    peer's parameters join the student's optimiser group. ``peer_lr_scale``,
    ``peer_momentum`` and ``peer_weight_decay`` give the peer its own group
    (``Method.param_groups``).

    Inner maximisation: the student (eval mode) maximises
    sum_i KL_i(softmax(P(x)) || softmax(S(x_k))) with P(x) the clean peer logits (a constant),
    ``gaussian_0.001`` start, no start clamp, 10 x 2/255.

    SWA (not in this class: the trainer's checkpoint rule): the official ``--swa_s`` averages
    the *student's parameters* after every 0-based epoch >= ``swa_s_start`` = 214 (= the first
    lr milestone), an equal average of the end-of-epoch students 214..299 (86 snapshots; BN
    buffers not averaged), then recomputes BN statistics over one full augmented training pass
    after each averaging step (running stats reset to 0 / 1, cumulative-average momentum). The
    paper reports the test-PGD-10-selected student and SWA student.

    Quirk flags (faithful default first):

    - ``peer_target_detach``: ``False`` (S(x') in L_P carries gradient to the student) | ``True``.
    - ``nat_target_detach``: ``False`` | ``True`` (stop-gradient on S(x) in ``kl_nat``).
    - ``student_adv_forwards``: ``2`` (separate train-mode S(x') forwards for L_P and L_S,
      each moving BN statistics) | ``1``.
    - ``kl_reduction``: ``mean_all`` (``nn.KLDivLoss()``) | ``batchmean`` | ``rslad``.
    - Protocol ``peeraid-cifar10`` (ardbench.protocols): 300 epochs, x0.1 at 0-based epochs
      214, 259, 284, checkpoint rule swa from epoch 214.

    Deviations from the official code: the official code sets no seed (ardbench seeds 0);
    ardbench reports the SWA model (the protocol's checkpoint rule; the last epoch is shown
    beside it), not test-selected checkpoints; SWA's BatchNorm statistics are recomputed once,
    after the last averaging step (the official code recomputes them after every one: only the
    last pass reaches the reported model); the peer is not converted to channels_last or compiled (the trainer's speed
    features cover the student and frozen networks).
    """

    teacherless_note = "no fixed teacher: distils from a peer trained with it"

    paper = "Jung et al., CVPR 2024 (arXiv 2403.06668)"
    needs_teacher = False
    teacher_in_attack = False  # the attack's target is the peer's clean logits, a constant

    def __init__(self, config: PeerAiDConfig | None = None) -> None:
        super().__init__(config)
        self.peer: nn.Module | None = None

    def build(self, ctx: SetupContext) -> None:
        if ctx.student_factory is None:
            raise ValueError(
                "peeraid builds its peer with setup(student_factory=...), a fresh network of "
                "the student's architecture; the caller passed none"
            )
        peer = ctx.student_factory()
        param = next(ctx.student.parameters(), None)
        if param is not None:
            peer.to(device=param.device, dtype=param.dtype)
        self.peer = peer.train()

    def param_groups(self, defaults: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.config
        params = list(self.parameters())
        if not params:
            return []
        own: dict[str, Any] = {}
        if cfg.peer_lr_scale != 1.0:
            own["lr_scale"] = cfg.peer_lr_scale
        if cfg.peer_momentum is not None:
            own["momentum"] = cfg.peer_momentum
        if cfg.peer_weight_decay is not None:
            own["weight_decay"] = cfg.peer_weight_decay
        return [{"params": params, **own}]

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        peer = self.peer
        if peer is None:
            raise ValueError("peeraid: setup() has not built the peer")
        cfg = self.config
        x, y = batch.x, batch.y
        peer.eval()
        with torch.no_grad():
            p_nat = peer(x)
        peer.train()
        x_adv = ctx.attack_fn(x, lambda xa: kl_per_sample(p_nat, student(xa)).sum())
        p_adv = peer(x_adv)
        s_adv_p = student(x_adv)
        target = s_adv_p.detach() if cfg.peer_target_detach else s_adv_p
        red, tr, tt = cfg.kl_reduction, cfg.tau_r, cfg.temperature
        terms = {
            "peer_ce": cfg.gamma1 * F.cross_entropy(p_adv, y),
            "peer_kl": cfg.gamma2 * tr**2 * kl_div(target, p_adv, red, tau=tr),
        }
        s_adv = student(x_adv) if cfg.student_adv_forwards == 2 else s_adv_p
        s_nat = student(x)
        if cfg.nat_target_detach:
            s_nat = s_nat.detach()
        terms["ce_adv"] = cfg.lambda1 * F.cross_entropy(s_adv, y)
        terms["kl_peer"] = cfg.lambda2 * tt**2 * kl_div(p_adv.detach(), s_adv, red, tau=tt)
        terms["kl_nat"] = cfg.lambda3 * tt**2 * kl_div(s_nat, s_adv, red, tau=tt)
        return terms
