"""Golden values for adaad, adaiad and igdm (the later methods of issue 13; mtard, peeraid and
the no-host-read rule for all five are in ``test_methods_golden_mtard_peeraid.py``; the tiny
nets are in ``golden_nets.py``, the math in ``lossmath.py``).

Every expected value is computed here from the official code's formula (written in
/work/notes/issue13_official_specs.md from boyellow/AdaAD@9e5c6e5 and HongsinLee/saad@295121c)
with plain tensor algebra, independently of ``ardbench.methods.losses`` and of the method code.
Networks and data are tiny, seeded and in float64.
"""

from __future__ import annotations

import copy

import golden_nets
import pytest
import torch
from golden_nets import B, C, Setup, fd_check, param_grads
from lossmath import ce, close, kl_rows, log_softmax, softmax

from ardbench.methods import build_method
from ardbench.protocols import AttackConfig, ConfigError
from ardbench.train.step import make_attack_fn

su = golden_nets.su  # the fixture


# ---------------------------------------------------------------------------------------------
# adaad (boyellow/AdaAD main.py:326-353, AT_helper.py:8-48)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_adaad_faithful_terms_per_dataset_reduction(num_classes):
    su = Setup(num_classes)
    terms = build_method("adaad").losses(su.student, su.teacher, su.batch, su.ctx())
    assert set(terms) == {"kl_adv", "kl_nat"}
    kl = kl_rows(su.t(su.x_adv), su.s(su.x_adv)).mean()  # batchmean
    # CIFAR-10 branch: nn.KLDivLoss() = mean over B*C; CIFAR-100 branch: sum / B
    close(terms["kl_adv"], kl / num_classes if num_classes == 10 else kl)
    close(terms["kl_nat"], 0.0)


@pytest.mark.parametrize("reduction", ["batchmean", "mean_all", "rslad"])
def test_adaad_alpha_and_explicit_reductions(su, reduction):
    m = build_method("adaad", {"alpha": 0.7, "kl_reduction": reduction})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx())

    def red(t, s):
        if reduction == "rslad":
            p = softmax(t)
            return (-p * log_softmax(s) + torch.log(p + 1e-5) * p).mean()
        k = kl_rows(t, s).mean()
        return k if reduction == "batchmean" else k / C

    close(terms["kl_adv"], 0.7 * red(su.t(su.x_adv), su.s(su.x_adv)))
    close(terms["kl_nat"], 0.3 * red(su.t(su.x), su.s(su.x)))


def test_adaad_forward_order_and_zero_weight_branch(su):
    out = {}
    for flag in (True, False):
        student, teacher = copy.deepcopy(su.student), copy.deepcopy(su.teacher)
        student.inputs.clear()
        teacher.inputs.clear()
        m = build_method("adaad", {"run_zero_weight_branches": flag})
        terms = m.losses(student, teacher, su.batch, su.ctx())
        out[flag] = (terms, student.bn.running_mean.clone(), student.inputs, teacher.inputs)
    # S(x) first, then S(x'): BatchNorm sees the clean batch first, as coded
    assert [t is su.x for t in out[True][2]] == [True, False]
    assert out[True][2][1] is su.x_adv
    assert len(out[True][3]) == 2 and len(out[False][3]) == 1  # T(x), T(x') / T(x')
    assert set(out[False][0]) == {"kl_adv"}
    close(out[True][0]["kl_adv"], out[False][0]["kl_adv"])
    assert not torch.allclose(out[True][1], out[False][1])


@pytest.mark.parametrize("method", ["adaad", "adaiad"])
def test_adaad_attack_objective_goes_through_both_networks(su, method):
    build_method(method).losses(su.student, su.teacher, su.batch, su.ctx())
    probe = (su.x + su.x_adv) / 2
    su.student.eval()  # the trainer puts the student in eval mode for this attack
    try:

        def formula(xp):
            with torch.no_grad():
                return kl_rows(su.teacher(xp), su.student(xp)).sum()

        g_both = fd_check(su.objectives[0], formula, probe)
        # the same objective with a constant teacher has another input gradient
        t_const = su.t(probe)
        xp = probe.clone().requires_grad_(True)
        (g_const,) = torch.autograd.grad(kl_rows(t_const, su.student(xp)).sum(), xp)
        assert not torch.allclose(g_both, g_const)
        # attack_teacher_grad: false gives exactly the constant-teacher gradient
        su.objectives.clear()
        build_method(method, {"attack_teacher_grad": False}).losses(
            su.student, su.teacher, su.batch, su.ctx()
        )
        su.student.eval()
        xp = probe.clone().requires_grad_(True)
        (g_flag,) = torch.autograd.grad(su.objectives[0](xp), xp)
        torch.testing.assert_close(g_flag, g_const)
    finally:
        su.student.train()
    assert all(p.grad is None for p in su.teacher.parameters())


def test_adaad_faithful_protocol():
    from ardbench.protocols import faithful_protocol

    f = faithful_protocol("adaad", "cifar10")
    assert f.name == "adaad-cifar10"
    assert f.attack.random_start == "gaussian_0.001" and not f.attack.clamp_start
    assert f.attack.student_mode == "eval" and f.attack.eps == 8 / 255
    assert f.train.weight_decay == 5e-4 and list(f.train.milestones) == [100, 150]
    assert f.train.seed == 42 and f.train.epochs == 200
    with pytest.raises(ConfigError):
        build_method("adaad", {"kl_reduction": "sum"})


# ---------------------------------------------------------------------------------------------
# adaiad (boyellow/AdaAD main.py:355-381)


def trust(su, beta=0.1):
    return softmax(su.t(su.x_adv))[torch.arange(B), su.y] ** beta


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("epoch", [59, 60])
def test_adaiad_as_coded_around_begin(num_classes, epoch):
    su = Setup(num_classes)
    su.student.inputs.clear()
    terms = build_method("adaiad").losses(su.student, su.teacher, su.batch, su.ctx(epoch))
    seen = [("x" if t is su.x else "adv" if t is su.x_adv else "?") for t in su.student.inputs]
    s_adv, t_adv = su.s(su.x_adv), su.t(su.x_adv)
    # tau 30, tau^2 * KL_batchmean on T(x') from epoch 0, on both datasets
    close(terms["kl_adv"], 900.0 * kl_rows(t_adv, s_adv, 30.0).mean())
    close(terms["ce_nat"], 0.0)
    if epoch == 59:
        assert set(terms) == {"kl_adv", "ce_nat"}
        assert seen == ["x", "adv", "x"]  # unused S(x), S(x'), CE's S(x)
    else:
        assert set(terms) == {"kl_adv", "kl_intro", "ce_nat"}
        assert seen == ["x", "adv", "x", "x"]
        w = softmax(t_adv)[torch.arange(B), su.y] ** 0.1
        close(terms["kl_intro"], ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())


def test_adaiad_flags(su):
    s_adv, t_adv = su.s(su.x_adv), su.t(su.x_adv)
    pre = build_method("adaiad", {"pre_begin_loss": "adaad"})
    close(
        pre.losses(su.student, su.teacher, su.batch, su.ctx(59))["kl_adv"],
        kl_rows(t_adv, s_adv).mean() / C,
    )  # AdaAD's term, mean_all on 10 classes
    after = pre.losses(su.student, su.teacher, su.batch, su.ctx(60))
    close(after["kl_adv"], 900.0 * kl_rows(t_adv, s_adv, 30.0).mean())
    m = build_method("adaiad", {"iad1_weight_teacher_term": True, "alpha": 0.5, "begin": 3})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(3))
    w = trust(su)
    close(terms["kl_adv"], 0.5 * 900.0 * (w * kl_rows(t_adv, s_adv, 30.0)).mean())
    close(terms["kl_intro"], 0.5 * ((1 - w) * kl_rows(su.s(su.x), s_adv)).mean())
    close(terms["ce_nat"], 0.5 * ce(su.s(su.x), su.y))
    su.student.inputs.clear()
    off = build_method("adaiad", {"run_zero_weight_branches": False})
    assert set(off.losses(su.student, su.teacher, su.batch, su.ctx(60))) == {"kl_adv", "kl_intro"}
    assert len(su.student.inputs) == 2  # S(x'), introspection S(x)


def test_adaiad_introspection_target_detach_changes_gradients_not_values(su):
    got = {}
    for detach in (False, True):
        student = copy.deepcopy(su.student)
        m = build_method("adaiad", {"introspection_target_detach": detach})
        terms = m.losses(student, su.teacher, su.batch, su.ctx(60))
        got[detach] = (terms["kl_intro"].detach(), param_grads(student, terms["kl_intro"]))
        ref = copy.deepcopy(su.student)
        s_adv, target = ref(su.x_adv), ref(su.x)
        expected = ((1 - trust(su)) * kl_rows(target.detach() if detach else target, s_adv)).mean()
        for a, b in zip(got[detach][1], param_grads(ref, expected), strict=True):
            torch.testing.assert_close(a, b)
    close(got[False][0], got[True][0])
    assert not torch.allclose(got[False][1][0], got[True][1][0])


# ---------------------------------------------------------------------------------------------
# igdm (HongsinLee/saad igdm.py:43-61, attacks.py:197-237)


def igdm_expected(su, epoch, alpha=1.0, den=200, clamp=False):
    x_minus = 2 * su.x - su.x_adv
    if clamp:
        x_minus = x_minus.clamp(0, 1)
    d_t = su.t(su.x_adv) - su.t(x_minus)
    d_s = su.s(su.x_adv) - su.s(x_minus)
    return alpha * (epoch + 1) / den * kl_rows(d_t, d_s).mean()


@pytest.mark.parametrize("epoch", [0, 99, 199, 249])
def test_igdm_on_adaad_saad_base_and_ramp(su, epoch):
    su.student.inputs.clear()
    su.teacher.inputs.clear()
    terms = build_method("igdm").losses(su.student, su.teacher, su.batch, su.ctx(epoch))
    s_inputs, t_inputs = list(su.student.inputs), list(su.teacher.inputs)
    assert set(terms) == {"kl_adv", "igdm"}
    # the saad repository's AdaAD: adversarial term only, batchmean even on 10 classes
    close(terms["kl_adv"], kl_rows(su.t(su.x_adv), su.s(su.x_adv)).mean())
    # ramp: 1-based epoch / 200 (0.005 at the first epoch, 1.25 at the 250th)
    close(terms["igdm"], igdm_expected(su, epoch))
    # two train-mode student forwards after the attack: S(x + d) (shared with the base), S(x - d)
    assert len(s_inputs) == 2 and s_inputs[0] is su.x_adv
    x_minus = s_inputs[1]
    torch.testing.assert_close(x_minus, 2 * su.x - su.x_adv)
    assert x_minus.min() < 0  # x - d is not clamped to [0, 1]
    # teacher: T(x') of the base, T(x + d) = T(x'), T(x - d); no T(x)
    assert len(t_inputs) == 3 and t_inputs[2] is x_minus
    assert all(t is su.x_adv for t in t_inputs[:2])


def test_igdm_ramp_den_alpha_and_clamp(su):
    m = build_method("igdm", {"ramp_den": None, "alpha": 10.0, "clamp_minus": True})
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(29, total_epochs=300))
    close(terms["igdm"], igdm_expected(su, 29, alpha=10.0, den=300, clamp=True))
    with pytest.raises(ConfigError, match="base"):
        build_method("igdm", {"base": "igdm"})
    with pytest.raises(ConfigError, match="unknown key"):
        build_method("igdm", {"base": "ard", "base_config": {"kl_reduction2": "x"}})


def test_igdm_gradient_through_both_student_forwards(su):
    student = copy.deepcopy(su.student)
    terms = build_method("igdm").losses(student, su.teacher, su.batch, su.ctx(99))
    got = param_grads(student, terms["igdm"])
    ref = copy.deepcopy(su.student)
    d_s = ref(su.x_adv) - ref(2 * su.x - su.x_adv)
    d_t = su.t(su.x_adv) - su.t(2 * su.x - su.x_adv)
    expected = 0.5 * kl_rows(d_t, d_s).mean()
    for a, b in zip(got, param_grads(ref, expected), strict=True):
        torch.testing.assert_close(a, b)
    assert got[0].abs().max() > 0


@pytest.mark.parametrize("base", ["ard", "rslad"])
def test_igdm_over_ardbench_bases(su, base):
    terms = build_method("igdm", {"base": base}).losses(su.student, su.teacher, su.batch, su.ctx(9))
    base_terms = build_method(base).losses(su.student, su.teacher, su.batch, su.ctx(9))
    assert set(terms) == set(base_terms) | {"igdm"}
    for k, v in base_terms.items():
        close(terms[k], v)
    close(terms["igdm"], igdm_expected(su, 9))
    if base == "ard":  # the base's own attack: summed CE on the student
        xp = (su.x + su.x_adv) / 2
        fd_check(su.objectives[0], lambda z: B * ce(su.s(z), su.y), xp)


def test_igdm_swapped_eps_step_flag(su):
    build_method("igdm").losses(su.student, su.teacher, su.batch, su.ctx())
    assert su.attacks == [None]  # default: the run's attack config
    build_method("igdm", {"swapped_eps_step": True}).losses(
        su.student, su.teacher, su.batch, su.ctx()
    )
    swapped = su.attacks[1]
    assert (swapped.eps, swapped.step) == (AttackConfig().step, AttackConfig().eps)
    # through the trainer's real attack: every coordinate ends within 2/255, most on the corner
    student = copy.deepcopy(su.student)
    cfg = AttackConfig(eps=8 / 255, step=2 / 255, steps=10, random_start="gaussian_0.001")
    torch.manual_seed(0)
    x_adv = {}
    real = make_attack_fn(student, cfg)

    def spy(x, objective, attack=None):
        x_adv["v"] = real(x, objective, attack=attack)
        return x_adv["v"]

    build_method("igdm", {"swapped_eps_step": True}).losses(
        student, su.teacher, su.batch, su.ctx(attack_fn=spy)
    )
    d = (x_adv["v"] - su.x).abs()
    assert d.max() <= 2 / 255 + 1e-12
    inside = (su.x > 2 / 255) & (su.x < 1 - 2 / 255)
    assert (d[inside] - 2 / 255).abs().lt(1e-12).float().mean() > 0.95


def test_igdm_adaad_base_official_form(su):
    m = build_method(
        "igdm", {"base_config": {"kl_reduction": "per_dataset", "run_zero_weight_branches": True}}
    )
    assert m.config.base_config["kl_reduction"] == "per_dataset"
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(0))
    assert set(terms) == {"kl_adv", "kl_nat", "igdm"}
    close(terms["kl_adv"], kl_rows(su.t(su.x_adv), su.s(su.x_adv)).mean() / C)
