"""Golden values for ard, iad, rslad, kdiga and vargap.

Every expected value is computed here from the written formula (reference sections 2.5-2.9)
with plain tensor algebra or numpy, independently of ``ardbench.methods.losses`` and of the method
code: softmax / KL / CE via logsumexp, KDIGA's input gradients by central finite differences,
vargap's covariance and Gram matrices with numpy. Networks and data are tiny, seeded and in
float64 so that rtol 1e-5 is far above the rounding error.
"""

from __future__ import annotations

import copy
import functools

import lossmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lossmath import ce, kl_rows, rslad_kl, softmax
from torch import nn

from ardbench.methods import Batch, StepContext, build_method
from ardbench.methods.rslad import kl_log_of_softmax
from ardbench.protocols import AttackConfig, ConfigError

DT = torch.float64
RTOL = 1e-5
B, C = 4, 10


# the independent math (lossmath.py), at this module's tolerance
close = functools.partial(lossmath.close, rtol=RTOL, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# fixtures


class Net(nn.Module):
    """conv-BN-ReLU-pool-linear with ``forward_features``; BN makes mode bugs visible."""

    def __init__(self, width: int, num_classes: int = C) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.fc(f), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def make_net(width: int, seed: int, num_classes: int = C, frozen: bool = False) -> Net:
    torch.manual_seed(seed)
    net = Net(width, num_classes).to(DT)
    with torch.no_grad():
        net.fc.weight.mul_(4.0)  # spread the logits: terms far from zero
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
        if frozen:
            net.bn.running_mean.uniform_(-0.2, 0.2)
            net.bn.running_var.uniform_(0.5, 1.5)
    if frozen:
        net.eval().requires_grad_(False)
    else:
        net.train()
    return net


class Setup:
    def __init__(self, num_classes: int = C) -> None:
        self.student = make_net(6, 1, num_classes)
        self.teacher = make_net(5, 2, num_classes, frozen=True)
        self.natural = make_net(4, 3, num_classes, frozen=True)
        g = torch.Generator().manual_seed(4)
        self.x = torch.rand(B, 3, 8, 8, generator=g, dtype=DT)
        self.y = torch.tensor([1, 3, 0, 7]) % num_classes
        delta = (torch.rand(B, 3, 8, 8, generator=g, dtype=DT) * 2 - 1) * 0.3
        self.x_adv = (self.x + delta).clamp(0, 1)
        self.batch = Batch(x=self.x, y=self.y, index=torch.arange(B))
        self.objectives: list = []
        self.attack_inputs: list = []
        self.logs: dict[str, float] = {}
        self.num_classes = num_classes

    def attack_fn(self, x, objective):
        self.attack_inputs.append(x)
        self.objectives.append(objective)
        return self.x_adv

    def ctx(self, epoch: int = 0, extras: dict | None = None) -> StepContext:
        return StepContext(
            epoch=epoch,
            total_epochs=200,
            step=0,
            attack=AttackConfig(),
            attack_fn=self.attack_fn,
            features=lambda m, x: m.forward_features(x),
            log=self.logs.__setitem__,
            num_classes=self.num_classes,
            extras=extras if extras is not None else {},
        )

    def s(self, x):
        """Student logits in train mode (batch statistics: repeated forwards agree)."""
        with torch.no_grad():
            return self.student(x)

    def t(self, x):
        with torch.no_grad():
            return self.teacher(x)


@pytest.fixture
def su() -> Setup:
    return Setup()


def count_forwards(net: nn.Module) -> list[int]:
    """Forwards of ``net`` (hooked on its first layer, so forward_features calls count too)."""
    calls = [0]
    net.conv.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    return calls


def check_objective(objective, expected_fn, x_probe, n_coords: int = 4, h: float = 1e-6):
    """Value of the captured attack objective against the formula, and its input gradient
    (sign and size) against central finite differences of the formula."""
    xp = x_probe.clone().requires_grad_(True)
    value = objective(xp)
    assert value.dim() == 0
    close(value, expected_fn(x_probe))
    (grad,) = torch.autograd.grad(value, xp)
    flat = grad.flatten()
    assert flat.abs().max() > 0
    for i in flat.abs().argsort(descending=True)[:n_coords].tolist():
        e = torch.zeros_like(flat)
        e[i] = h
        e = e.view_as(x_probe)
        fd = (expected_fn(x_probe + e) - expected_fn(x_probe - e)) / (2 * h)
        assert torch.sign(fd) == torch.sign(flat[i])
        assert float(fd) == pytest.approx(float(flat[i]), rel=1e-4, abs=1e-9)


def grads_of(net: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    params = [p for p in net.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, allow_unused=True))


# ---------------------------------------------------------------------------------------------
# ARD (reference 2.5)


def test_ard_faithful_terms(su):
    m = build_method("ard")
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())
    assert set(terms) == {"kl_adv", "ce_nat"}
    tau = 30.0
    # nn.KLDivLoss() = mean over B*C entries = KL_batchmean / C
    close(terms["kl_adv"], tau**2 * kl_rows(su.t(su.x), su.s(su.x_adv), tau).mean() / C)
    close(terms["ce_nat"], 0.0)
    assert su.attack_inputs[0] is su.x


def test_ard_attack_objective_is_summed_ce(su):
    build_method("ard").losses(su.student, su.teacher, su.batch, su.ctx())
    probe = (su.x + su.x_adv) / 2
    check_objective(su.objectives[0], lambda xp: B * ce(su.s(xp), su.y), probe)


def test_ard_alpha_tau_and_reductions(su):
    cfg = {"alpha": 0.7, "tau": 4.0}
    mean_all = build_method("ard", cfg).losses(su.student, su.teacher, su.batch, su.ctx())
    batchmean = build_method("ard", {**cfg, "kl_reduction": "batchmean"}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    kl_bm = kl_rows(su.t(su.x), su.s(su.x_adv), 4.0).mean()
    close(batchmean["kl_adv"], 0.7 * 16 * kl_bm)
    close(mean_all["kl_adv"], batchmean["kl_adv"] / C)  # mean_all = batchmean / C
    close(mean_all["ce_nat"], 0.3 * ce(su.s(su.x), su.y))


def test_ard_teacher_input_adv(su):
    terms = build_method("ard", {"teacher_input": "adv", "tau": 2.0}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    close(terms["kl_adv"], 4.0 * kl_rows(su.t(su.x_adv), su.s(su.x_adv), 2.0).mean() / C)


def test_ard_zero_weight_branch_moves_bn_stats_only(su):
    out = {}
    for flag in (True, False):
        student = copy.deepcopy(su.student)
        calls = count_forwards(student)
        terms = build_method("ard", {"run_zero_weight_branches": flag}).losses(
            student, su.teacher, su.batch, su.ctx()
        )
        out[flag] = (terms, student.bn.running_mean.clone(), calls[0])
    assert set(out[True][0]) == {"kl_adv", "ce_nat"} and set(out[False][0]) == {"kl_adv"}
    close(out[True][0]["kl_adv"], out[False][0]["kl_adv"])
    assert (out[True][2], out[False][2]) == (2, 1)  # S(x') [+ S(x)]
    assert not torch.allclose(out[True][1], out[False][1])
    # alpha < 1: the CE branch runs whatever the flag says
    terms = build_method("ard", {"alpha": 0.5, "run_zero_weight_branches": False}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    assert "ce_nat" in terms


def test_ard_faithful_protocol():
    from ardbench.protocols import faithful_protocol

    f = faithful_protocol("ard", "cifar10")
    assert f.name == "ard-cifar10"
    assert f.attack.student_mode == "train" and f.attack.random_start == "uniform"
    assert f.train.lr_schedule == "ard_as_coded" and f.train.weight_decay == 2e-4


# ---------------------------------------------------------------------------------------------
# IAD (reference 2.6)


def trust(su: Setup, beta: float = 0.1) -> torch.Tensor:
    return softmax(su.t(su.x_adv))[torch.arange(B), su.y] ** beta


@pytest.mark.parametrize("epoch", [59, 60])
def test_iad1_terms_around_warmup(su, epoch):
    terms = build_method("iad").losses(su.student, su.teacher, su.batch, su.ctx(epoch))
    s_adv = su.s(su.x_adv)
    close(terms["kl_adv"], kl_rows(su.t(su.x), s_adv).mean())  # not weighted, as coded
    close(terms["ce_nat"], 0.0)
    if epoch == 59:
        assert set(terms) == {"kl_adv", "ce_nat"}
        assert "iad_trust_mean" not in su.logs
    else:
        assert set(terms) == {"kl_adv", "kl_intro", "ce_nat"}
        w = trust(su)
        assert su.logs["iad_trust_mean"] == pytest.approx(float(w.mean()), rel=1e-9)
        close(terms["kl_intro"], ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())


def test_iad_trust_weights_values(su):
    """w_i = softmax(T(x'))[y_i]^beta, tau-free, in (0, 1], and 1 - w_i weights kl_intro."""
    m = build_method("iad", {"beta": 0.5, "tau": 3.0, "begin": 10})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(10))
    w = trust(su, 0.5)
    assert ((w > 0) & (w <= 1)).all()
    assert su.logs["iad_trust_mean"] == pytest.approx(float(w.mean()), rel=1e-9)
    s_adv = su.s(su.x_adv)
    close(terms["kl_adv"], 9.0 * kl_rows(su.t(su.x), s_adv, 3.0).mean())
    close(terms["kl_intro"], ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())  # untempered
    assert "kl_intro" not in m.losses(su.student, su.teacher, su.batch, su.ctx(9))


def test_iad1_alpha_weights(su):
    terms = build_method("iad", {"alpha": 0.6, "tau": 2.0}).losses(
        su.student, su.teacher, su.batch, su.ctx(60)
    )
    s_adv, w = su.s(su.x_adv), trust(su)
    close(terms["kl_adv"], 0.6 * 4.0 * kl_rows(su.t(su.x), s_adv, 2.0).mean())
    close(terms["kl_intro"], 0.6 * ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())
    close(terms["ce_nat"], 0.4 * ce(su.s(su.x), su.y))


def test_iad1_weight_teacher_term_flag(su):
    m = build_method("iad", {"iad1_weight_teacher_term": True})
    after = m.losses(su.student, su.teacher, su.batch, su.ctx(60))
    kl = kl_rows(su.t(su.x), su.s(su.x_adv))
    close(after["kl_adv"], (trust(su) * kl).mean())
    assert float(after["kl_adv"].detach()) < float(kl.mean())
    before = m.losses(su.student, su.teacher, su.batch, su.ctx(59))
    close(before["kl_adv"], kl.mean())


def test_iad_introspection_target_detach_changes_gradients_not_values(su):
    w = trust(su)
    results = {}
    for detach in (False, True):
        student = copy.deepcopy(su.student)
        m = build_method("iad", {"introspection_target_detach": detach})
        terms = m.losses(student, su.teacher, su.batch, su.ctx(60))
        got = grads_of(student, terms["kl_intro"])
        # the same term written out by hand on a fresh copy, detaching the target or not
        ref = copy.deepcopy(su.student)
        s_adv = ref(su.x_adv)
        target = ref(su.x)
        if detach:
            target = target.detach()
        expected = ((1 - w) * kl_rows(target, s_adv)).mean()
        for a, b in zip(got, grads_of(ref, expected), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)
        results[detach] = (terms["kl_intro"].detach(), got)
    close(results[False][0], results[True][0])
    assert not torch.allclose(results[False][1][0], results[True][1][0])


def test_iad1_zero_weight_branches(su):
    out = {}
    for flag in (True, False):
        for epoch in (59, 60):
            student, teacher = copy.deepcopy(su.student), copy.deepcopy(su.teacher)
            s_calls, t_calls = count_forwards(student), count_forwards(teacher)
            terms = build_method("iad", {"run_zero_weight_branches": flag}).losses(
                student, teacher, su.batch, su.ctx(epoch)
            )
            out[flag, epoch] = (terms, student.bn.running_mean.clone(), s_calls[0], t_calls[0])
    # forwards: S(x'), basicop S(x'), [intro S(x)], CE S(x) / T(x), T(x')
    assert [out[True, e][2:] for e in (59, 60)] == [(3, 2), (4, 2)]
    assert [out[False, e][2:] for e in (59, 60)] == [(1, 1), (2, 2)]
    assert set(out[False, 59][0]) == {"kl_adv"} and set(out[False, 60][0]) == {"kl_adv", "kl_intro"}
    for e in (59, 60):
        for k in out[False, e][0]:
            close(out[True, e][0][k], out[False, e][0][k])
        assert not torch.allclose(out[True, e][1], out[False, e][1])


def test_iad_attack_objective_is_summed_ce(su):
    build_method("iad").losses(su.student, su.teacher, su.batch, su.ctx(0))
    check_objective(su.objectives[0], lambda xp: B * ce(su.s(xp), su.y), (su.x + su.x_adv) / 2)


def test_iad2_requires_natural_teacher(su):
    with pytest.raises(ConfigError, match="natural_teacher"):
        build_method("iad", {"variant": "II"})
    m = build_method("iad", {"variant": "II", "natural_teacher": "resnet18:nat.pt"})
    assert m.extra_models() == {"natural": "resnet18:nat.pt"}
    assert build_method("iad").extra_models() == {}
    with pytest.raises(ValueError, match="natural"):
        m.losses(su.student, su.teacher, su.batch, su.ctx(0, extras={}))


@pytest.mark.parametrize("epoch", [39, 40])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_iad2_terms_around_warmup(su, epoch, tau):
    m = build_method("iad", {"variant": "II", "natural_teacher": "x", "tau": tau})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(epoch, {"natural": su.natural}))
    s_adv, t_adv = su.s(su.x_adv), su.t(su.x_adv)
    with torch.no_grad():
        n_adv = su.natural(su.x_adv)
    close(terms["ce_adv"], 0.25 * ce(s_adv, su.y))
    close(terms["kl_nt_adv"], 0.25 * tau**2 * kl_rows(n_adv, s_adv, tau).mean())
    kl_t = kl_rows(t_adv, s_adv, tau)
    if epoch == 39:
        assert set(terms) == {"ce_adv", "kl_adv", "kl_nt_adv"}
        close(terms["kl_adv"], 0.5 * tau**2 * kl_t.mean())
    else:
        assert set(terms) == {"ce_adv", "kl_adv", "kl_intro", "kl_nt_adv"}
        w = softmax(t_adv)[torch.arange(B), su.y] ** 0.1
        close(terms["kl_adv"], 0.5 * tau**2 * (w * kl_t).mean())
        # the introspection KL is untempered but sits inside alpha1 * tau^2 (as coded)
        close(terms["kl_intro"], 0.5 * tau**2 * ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())
        assert su.logs["iad_trust_mean"] == pytest.approx(float(w.mean()), rel=1e-9)


def test_iad_config_defaults():
    cfg = build_method("iad").config
    assert (cfg.variant, cfg.alpha, cfg.tau, cfg.beta, cfg.warmup_end) == ("I", 1.0, 1.0, 0.1, 60)
    cfg2 = build_method("iad", {"variant": "II", "natural_teacher": "x"}).config
    assert (cfg2.alpha1, cfg2.alpha2, cfg2.warmup_end) == (0.5, 0.25, 40)
    with pytest.raises(ConfigError):
        build_method("iad", {"variant": "III"})


# ---------------------------------------------------------------------------------------------
# RSLAD (reference 2.7)


def test_rslad_faithful_terms(su):
    terms = build_method("rslad").losses(su.student, su.teacher, su.batch, su.ctx())
    assert set(terms) == {"kl_adv", "kl_nat"}
    t = su.t(su.x)
    close(terms["kl_adv"], 5 / 6 * rslad_kl(t, su.s(su.x_adv)))
    close(terms["kl_nat"], 1 / 6 * rslad_kl(t, su.s(su.x)))


def test_rslad_attack_objective_is_summed_kl_to_clean_teacher(su):
    build_method("rslad").losses(su.student, su.teacher, su.batch, su.ctx())
    t = su.t(su.x)
    su.student.eval()  # RSLAD attacks in eval mode (the trainer switches it)
    try:
        check_objective(
            su.objectives[0], lambda xp: kl_rows(t, su.s(xp)).sum(), (su.x + su.x_adv) / 2
        )
    finally:
        su.student.train()


def test_rslad_batchmean_reduction(su):
    terms = build_method("rslad", {"kl_reduction": "batchmean"}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    t = su.t(su.x)
    close(terms["kl_adv"], 5 / 6 * kl_rows(t, su.s(su.x_adv)).mean())
    close(terms["kl_nat"], 1 / 6 * kl_rows(t, su.s(su.x)).mean())


def test_rslad_cifar100_scale_and_log_of_softmax():
    su = Setup(num_classes=100)
    terms = build_method("rslad").losses(su.student, su.teacher, su.batch, su.ctx())
    t = su.t(su.x)
    # x10 for C = 100 (their scripts) and log(softmax) instead of log_softmax: same value here
    close(terms["kl_adv"], 5 / 6 * rslad_kl(t, su.s(su.x_adv)))
    close(terms["kl_nat"], 1 / 6 * rslad_kl(t, su.s(su.x)))


def test_rslad_log_of_softmax_differs_only_where_softmax_underflows():
    t = torch.tensor([[0.0, 0.0, 0.0]], dtype=DT)
    s_ok = torch.tensor([[1.0, 0.0, -2.0]], dtype=DT)
    s_extreme = torch.tensor([[0.0, -1000.0, 0.0]], dtype=DT)
    for reduction in ("rslad", "batchmean", "mean_all"):
        a = kl_log_of_softmax(t, s_ok, reduction)
        assert torch.isfinite(a)
        assert not torch.isfinite(kl_log_of_softmax(t, s_extreme, reduction))
    close(kl_log_of_softmax(t, s_ok, "batchmean"), kl_rows(t, s_ok).mean())
    close(kl_log_of_softmax(t, s_ok, "mean_all"), kl_rows(t, s_ok).mean() / 3)
    close(kl_log_of_softmax(t, s_ok, "rslad"), rslad_kl(t, s_ok))
    # the default C = 10 path (log_softmax) stays finite on the same logits
    m = build_method("rslad", {"log_softmax_impl": "log_softmax"})
    assert torch.isfinite(m._kl(t, s_extreme))
    assert not torch.isfinite(
        build_method("rslad", {"log_softmax_impl": "log_of_softmax"})._kl(t, s_extreme)
    )


class RecordingNet(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def test_rslad_teacher_norm_c100_remaps_the_teacher_input():
    su = Setup(num_classes=100)
    teacher = RecordingNet(su.teacher).eval()
    build_method("rslad", {"teacher_norm_c100": "cifar10_constants"}).losses(
        su.student, teacher, su.batch, su.ctx()
    )
    m10 = torch.tensor([0.4914, 0.4822, 0.4465], dtype=DT).view(1, 3, 1, 1)
    s10 = torch.tensor([0.2471, 0.2435, 0.2616], dtype=DT).view(1, 3, 1, 1)
    m100 = torch.tensor([0.5071, 0.4865, 0.4409], dtype=DT).view(1, 3, 1, 1)
    s100 = torch.tensor([0.2673, 0.2564, 0.2762], dtype=DT).view(1, 3, 1, 1)
    (seen,) = teacher.inputs
    # the teacher's internal (x' - m100) / s100 equals the committed wrapper's (x - m10) / s10
    torch.testing.assert_close((seen - m100) / s100, (su.x - m10) / s10)
    # default, and on CIFAR-10 whatever the flag: the clean batch as is
    for su_, cfg in ((su, {}), (Setup(), {"teacher_norm_c100": "cifar10_constants"})):
        teacher = RecordingNet(su_.teacher).eval()
        build_method("rslad", cfg).losses(su_.student, teacher, su_.batch, su_.ctx())
        torch.testing.assert_close(teacher.inputs[0], su_.x, rtol=0, atol=0)


def test_rslad_teacher_dtype_c100_fp16_autocast():
    su = Setup(num_classes=100)
    student, teacher = su.student.float(), su.teacher.float()
    batch = Batch(x=su.x.float(), y=su.y, index=su.batch.index)
    su.x_adv = su.x_adv.float()
    fp32 = build_method("rslad").losses(student, teacher, batch, su.ctx())
    fp16 = build_method("rslad", {"teacher_dtype_c100": "fp16"}).losses(
        student, teacher, batch, su.ctx()
    )
    assert fp16["kl_adv"].dtype == torch.float32
    a, b = float(fp16["kl_adv"].detach()), float(fp32["kl_adv"].detach())
    assert a != b and a == pytest.approx(b, rel=1e-2)


# ---------------------------------------------------------------------------------------------
# KDIGA (reference 2.8)


def input_grad(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x of the batch-mean CE(net(x), y) in the net's current mode (batch statistics for
    the train-mode student), checked against central finite differences along random
    directions: <g, v> = (CE(x + h v) - CE(x - h v)) / 2h."""
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ce(net(xr), y), xr)
    gen, h = torch.Generator().manual_seed(0), 1e-6
    with torch.no_grad():
        for _ in range(4):
            v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            fd = (ce(net(x + h * v), y) - ce(net(x - h * v), y)) / (2 * h)
            assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-6, abs=1e-12)
        for b in range(x.shape[0]):  # one sample at a time: BN couples samples in train mode
            v = torch.zeros_like(x)
            v[b] = torch.randn(x.shape[1:], generator=gen, dtype=x.dtype)
            fd = (ce(net(x + h * v), y) - ce(net(x - h * v), y)) / (2 * h)
            assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-6, abs=1e-12)
    return g


@pytest.fixture(scope="module")
def kdiga_grads():
    su = Setup()
    return su, input_grad(su.student, su.x, su.y), input_grad(su.teacher, su.x, su.y)


def test_kdiga_clean_terms_with_hand_gradients(kdiga_grads):
    su, g_s, g_t = kdiga_grads
    terms = build_method("kdiga").losses(su.student, su.teacher, su.batch, su.ctx())
    assert set(terms) == {"kl_nat", "ce_nat", "grad_align"}
    assert su.objectives == []  # no inner maximisation
    s, t = su.s(su.x), su.t(su.x)
    close(terms["kl_nat"], 0.5 * kl_rows(t, s).mean() / C)  # alpha tau^2 KL_mean_all
    close(terms["ce_nat"], 0.5 * ce(s, su.y))
    # (gamma / B) * ||grad_S - grad_T||_2 over the whole batch tensor
    close(terms["grad_align"], 0.5 / B * torch.sqrt(((g_s - g_t) ** 2).sum()), rtol=1e-6)


@pytest.mark.parametrize("norm", ["per_sample_l2_mean", "per_sample_sq_mean"])
def test_kdiga_iga_norm_variants(kdiga_grads, norm):
    su, g_s, g_t = kdiga_grads
    terms = build_method("kdiga", {"iga_norm": norm, "gamma": 2.0}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    per_sample = (B * (g_s - g_t)).flatten(1)  # gradient of each sample's own CE
    sq = (per_sample**2).sum(1)
    expected = 2.0 * (sq.sqrt().mean() if norm == "per_sample_l2_mean" else sq.mean())
    close(terms["grad_align"], expected, rtol=1e-6)


def test_kdiga_grad_align_backpropagates_through_the_student_gradient(su):
    """d grad_align / d theta (double backprop) against finite differences in theta."""
    terms = build_method("kdiga").losses(su.student, su.teacher, su.batch, su.ctx())
    got = torch.autograd.grad(terms["grad_align"], [su.student.conv.weight, su.student.fc.weight])
    xt = su.x.clone().requires_grad_(True)
    (g_t,) = torch.autograd.grad(ce(su.teacher(xt), su.y), xt)

    def align() -> torch.Tensor:
        xs = su.x.clone().requires_grad_(True)
        (g_s,) = torch.autograd.grad(ce(su.student(xs), su.y), xs)
        return 0.5 / B * torch.sqrt(((g_s - g_t) ** 2).sum())

    h = 1e-6
    for param, grad in zip([su.student.conv.weight, su.student.fc.weight], got, strict=True):
        assert grad.abs().max() > 0
        for idx in [(0,) * param.dim(), tuple(s - 1 for s in param.shape)]:
            with torch.no_grad():
                param[idx] += h
            up = align()
            with torch.no_grad():
                param[idx] -= 2 * h
            down = align()
            with torch.no_grad():
                param[idx] += h
            assert float(grad[idx]) == pytest.approx(
                float((up - down) / (2 * h)), rel=1e-4, abs=1e-10
            )
    # the teacher's gradient is a constant: nothing reaches the frozen teacher
    assert all(p.grad is None for p in su.teacher.parameters())


def test_kdiga_rs_uses_uniform_noise_unclamped(su):
    torch.manual_seed(11)
    terms = build_method("kdiga", {"variant": "rs"}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    torch.manual_seed(11)
    x_rs = su.x + torch.zeros_like(su.x).uniform_(-8 / 255, 8 / 255)
    s, t = su.s(x_rs), su.t(x_rs)
    close(terms["kl_nat"], 0.5 * kl_rows(t, s).mean() / C)
    close(terms["ce_nat"], 0.5 * ce(s, su.y))
    g_s, g_t = input_grad(su.student, x_rs, su.y), input_grad(su.teacher, x_rs, su.y)
    close(terms["grad_align"], 0.5 / B * torch.sqrt(((g_s - g_t) ** 2).sum()))
    torch.testing.assert_close(su.batch.x, su.x)  # the batch itself is untouched


@pytest.mark.parametrize("teacher_input", ["adv", "clean"])
def test_kdiga_ard_variant(kdiga_grads, teacher_input):
    su, g_s, g_t = kdiga_grads
    su.objectives.clear()
    m = build_method("kdiga", {"variant": "ard", "teacher_input": teacher_input})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())
    assert set(terms) == {"kl_adv", "ce_nat", "grad_align"}
    t = su.t(su.x_adv if teacher_input == "adv" else su.x)
    close(terms["kl_adv"], 0.5 * kl_rows(t, su.s(su.x_adv)).mean() / C)
    close(terms["ce_nat"], 0.5 * ce(su.s(su.x), su.y))
    close(terms["grad_align"], 0.5 / B * torch.sqrt(((g_s - g_t) ** 2).sum()), rtol=1e-6)  # clean x
    check_objective(su.objectives[0], lambda xp: B * ce(su.s(xp), su.y), (su.x + su.x_adv) / 2)


def test_kdiga_batchmean_and_protocol(su):
    a = build_method("kdiga").losses(su.student, su.teacher, su.batch, su.ctx())
    b = build_method("kdiga", {"kl_reduction": "batchmean"}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    close(b["kl_nat"], C * a["kl_nat"])
    from ardbench.protocols import faithful_protocol

    attack = faithful_protocol("kdiga").attack
    assert attack.step == pytest.approx(1.6 / 255) and attack.student_mode == "train"


# ---------------------------------------------------------------------------------------------
# vargap (reference 2.9)


def vargap_method(su: Setup, **cfg):
    # unit weights unless a test says otherwise: the golden formulas below are written for them
    m = build_method("vargap", {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, **cfg})
    d_s, d_t = su.student.fc.in_features, su.teacher.fc.in_features
    m.setup(student=su.student, teacher=su.teacher, num_classes=C, feature_dims=(d_s, d_t))
    return m


def np_feats(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net.forward_features(x)[1].numpy()


def np_gaps(f_s: np.ndarray, f_t: np.ndarray, p: np.ndarray | None) -> tuple[float, float]:
    fs = f_s @ p.T if p is not None else f_s
    d = f_t.shape[1]
    cov = ((np.cov(fs, rowvar=False) - np.cov(f_t, rowvar=False)) ** 2).sum() / d**2
    n = fs.shape[0]
    gram = ((fs.T @ fs / n - f_t.T @ f_t / n) ** 2).sum() / d**2
    return cov, gram


@pytest.mark.parametrize("align_on", ["both", "adv", "clean"])
def test_vargap_terms_against_numpy(su, align_on):
    m = vargap_method(su, align_on=align_on, beta=0.5, gamma=2.0, alpha=1.5)
    assert m.projector is not None and m.projector.bias is None
    assert tuple(m.projector.weight.shape) == (5, 6)
    s_calls, t_calls = count_forwards(su.student), count_forwards(su.teacher)
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())
    # adv: no S(x) forward; clean with kd on the clean teacher: no T(x') forward
    assert (s_calls[0], t_calls[0]) == (
        {"both": 2, "adv": 1, "clean": 2}[align_on],
        {"both": 2, "adv": 2, "clean": 1}[align_on],
    )
    assert set(terms) == {"ce_adv", "kd", "cov", "gram"}
    close(terms["ce_adv"], ce(su.s(su.x_adv), su.y))
    close(terms["kd"], 1.5 * kl_rows(su.t(su.x), su.s(su.x_adv)).mean())
    p = m.projector.weight.detach().numpy()
    views = {"both": ("clean", "adv"), "adv": ("adv",), "clean": ("clean",)}[align_on]
    cov = gram = 0.0
    for view in views:
        xv = su.x if view == "clean" else su.x_adv
        c, g = np_gaps(np_feats(su.student, xv), np_feats(su.teacher, xv), p)
        cov, gram = cov + c, gram + g
        assert su.logs[f"cov_gap_{view}"] == pytest.approx(c, rel=1e-9)
    close(terms["cov"], 0.5 * cov)
    close(terms["gram"], 2.0 * gram)


def test_vargap_gradients_reach_student_and_projector_not_teacher(su):
    m = vargap_method(su)
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())
    (terms["cov"] + terms["gram"]).backward()
    assert m.projector.weight.grad is not None and m.projector.weight.grad.abs().max() > 0
    assert su.student.conv.weight.grad.abs().max() > 0
    assert all(p.grad is None for p in su.teacher.parameters())


def test_vargap_kd_teacher_input_adv_and_tau(su):
    terms = vargap_method(su, kd_teacher_input="adv", tau=2.0).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    close(terms["kd"], 4.0 * kl_rows(su.t(su.x_adv), su.s(su.x_adv), 2.0).mean())


def test_vargap_projector_none(su):
    with pytest.raises(ValueError, match="projector"):
        vargap_method(su, projector="none")
    twin = make_net(6, 9, frozen=True)
    su.teacher = twin
    m = vargap_method(su, projector="none")
    assert m.projector is None and list(m.parameters()) == []
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())
    cov = gram = 0.0
    for xv in (su.x, su.x_adv):
        c, g = np_gaps(np_feats(su.student, xv), np_feats(twin, xv), None)
        cov, gram = cov + c, gram + g
    close(terms["cov"], cov)
    close(terms["gram"], gram)


def test_vargap_ablation_weights_zero(su):
    terms = vargap_method(su, beta=0.0, gamma=0.0).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    assert float(terms["cov"].detach()) == 0.0 and float(terms["gram"].detach()) == 0.0


def test_vargap_attack_objective_and_setup_required(su):
    m = vargap_method(su)
    m.losses(su.student, su.teacher, su.batch, su.ctx())
    check_objective(su.objectives[0], lambda xp: B * ce(su.s(xp), su.y), (su.x + su.x_adv) / 2)
    with pytest.raises(RuntimeError, match="setup"):
        build_method("vargap").losses(su.student, su.teacher, su.batch, su.ctx())


def test_vargap_statistics_in_fp32_under_autocast(su):
    student, teacher = su.student.float(), su.teacher.float()
    su.student, su.teacher = student, teacher
    m = vargap_method(su)
    m.float()
    batch = Batch(x=su.x.float(), y=su.y, index=su.batch.index)
    su.x_adv = su.x_adv.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = m.losses(student, teacher, batch, su.ctx())
    assert terms["cov"].dtype == torch.float32 and terms["gram"].dtype == torch.float32
    assert torch.isfinite(terms["cov"]) and torch.isfinite(terms["gram"])
    assert build_method("vargap").unofficial is True
