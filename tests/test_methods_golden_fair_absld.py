"""Golden values for fair_ard (bases ard, iad, rslad, mtard) and absld, computed by hand from the
official code (NISP-official/Fair-ARD@910c8cd ``Fair-*.py``; zhaoshiji123/ABSLD@7407c3a
``resnet18_absld_cifar10.py``, ``absld_loss.py``) in float64 on the tiny nets of
``golden_nets.py`` (math from ``lossmath.py``): every term and reduction, the attack
objectives, the per-class counts and the per-epoch updates. Independent of ``ardbench.methods.losses`` and the method code."""

from __future__ import annotations

import golden_nets
import pytest
import torch
from golden_nets import DT, B, Setup
from lossmath import close, kl_rows, log_softmax, softmax

from ardbench.methods import Batch, build_method
from ardbench.protocols import ConfigError

su = golden_nets.su  # the fixture

W = torch.tensor([1.0, 2.0, 0.9, 1.5, 1.0, 1.0, 1.0, 2.5, 1.0, 1.0])  # class weights


def ce_rows(z, y):
    return -log_softmax(z)[torch.arange(len(y)), y]


def rslad_rows(t, s):
    """sum_c (-p log q + p log(p + 1e-5)) / C per row (Fair-RSLAD / Fair-MTARD kl_loss rows)."""
    p = softmax(t)
    return (-p * log_softmax(s) + torch.log(p + 1e-5) * p).sum(1) / t.shape[1]


def fair(base, su, epoch=0, w=W, **cfg):
    m = build_method("fair_ard", {"base": base, **cfg})
    m.class_w.copy_(w)
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(epoch))
    return m, terms, w.to(DT)[su.y]


def test_fair_ard_terms(su):
    m, terms, w = fair("ard", su)
    kl = kl_rows(su.t(su.x) / 30, su.s(su.x_adv) / 30) / 10  # per-row nn.KLDivLoss(): / C
    close(terms["kl_adv"], 900 * (w * kl).mean())
    close(terms["ce_nat"], 0.0)
    _, terms, w = fair("ard", su, base_config={"alpha": 0.25})
    close(terms["kl_adv"], 0.25 * 900 * (w * kl).mean())
    close(terms["ce_nat"], 0.75 * (w * ce_rows(su.s(su.x), su.y)).mean())


def test_fair_iad_terms_before_and_after_begin(su):
    _, terms, w = fair("iad", su, epoch=59)
    assert set(terms) == {"kl_adv"}
    close(terms["kl_adv"], (w * kl_rows(su.t(su.x), su.s(su.x_adv))).mean())
    _, terms, w = fair("iad", su, epoch=60)
    a = softmax(su.t(su.x_adv))[torch.arange(B), su.y] ** 0.1
    close(terms["kl_adv"], (w * kl_rows(su.t(su.x), su.s(su.x_adv))).mean())
    close(terms["kl_intro"], (w * (1 - a) * kl_rows(su.s(su.x), su.s(su.x_adv))).mean())
    close(terms["ce_adv"], 0.0)
    _, terms, w = fair("iad", su, epoch=60, base_config={"alpha": 0.5})
    close(terms["ce_adv"], 0.5 * (w * ce_rows(su.s(su.x_adv), su.y)).mean())
    close(terms["kl_intro"], 0.5 * (w * (1 - a) * kl_rows(su.s(su.x), su.s(su.x_adv))).mean())


def test_fair_rslad_terms(su):
    _, terms, w = fair("rslad", su)
    t = su.t(su.x)
    close(terms["kl_adv"], 5 / 6 * (w * rslad_rows(t, su.s(su.x_adv))).mean())
    close(terms["kl_nat"], 1 / 6 * (w * rslad_rows(t, su.s(su.x))).mean())


def test_fair_mtard_both_terms_distil_the_teacher_on_x_adv(su):
    m, terms, w = fair("mtard", su)
    t_adv = su.t(su.x_adv)
    kl_a = (w * rslad_rows(t_adv, su.s(su.x_adv))).mean()
    kl_n = (w * rslad_rows(t_adv, su.s(su.x))).mean()
    close(terms["kl_adv"], 0.5 * kl_a)  # first iteration: r_adv = r_nat = 1, w stays 1/2
    close(terms["kl_nat"], 0.5 * kl_n)
    assert m.mtard.loss_ref.tolist() == pytest.approx([float(kl_a), float(kl_n)], rel=1e-6)
    cfg = {"fair_mtard_nat_target": "nat_teacher_on_clean", "base_config": {"natural_teacher": "x"}}
    m = build_method("fair_ard", {"base": "mtard", **cfg})
    m.class_w.copy_(W)
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(0, {"natural": su.natural}))
    with torch.no_grad():
        n = su.natural(su.x)
    close(terms["kl_nat"], 0.5 * (w * rslad_rows(n, su.s(su.x))).mean())


@pytest.mark.parametrize(
    "base,formula",
    [
        ("ard", lambda su, s: ce_rows(s, su.y).sum()),
        ("iad", lambda su, s: ce_rows(s, su.y).sum()),
        ("rslad", lambda su, s: kl_rows(su.t(su.x), s).sum()),
        ("mtard", lambda su, s: ce_rows(s, su.y).mean()),
    ],
)
def test_fair_attack_objectives_and_survival_counts(su, base, formula):
    m, _, _ = fair(base, su)
    objective = su.objectives[0]
    assert int(m.kappa_sum.sum()) == 0
    hits = torch.zeros(10, dtype=torch.int64)
    for k in range(3):  # three iterates
        xk = (su.x + 0.05 * k * torch.sign(su.x_adv - su.x)).clamp(0, 1)
        close(objective(xk), formula(su, su.s(xk)))
        right = su.s(xk).argmax(1) == su.y
        hits.index_add_(0, su.y, right.long())
    assert m.kappa_sum.tolist() == hits.tolist()
    assert int(m.seen) == B


def expected_weights(kappa_sum, seen, eps=1e-5, beta=2.0, C=10):
    kappa = [k / (seen / C) for k in kappa_sum]
    raw = [(1 / (k + eps)) ** beta if k + eps > 0 else float("inf") for k in kappa]
    total = sum(raw)
    return [min(max(r * C / total, 5 / 6), 5 / 2) for r in raw]


@pytest.mark.parametrize("base,eps", [("ard", 1e-5), ("rslad", 0.0)])
def test_fair_weights_after_an_epoch(base, eps):
    su = Setup()
    m = build_method("fair_ard", {"base": base})
    counts = torch.tensor([4, 9, 2, 7, 5, 3, 8, 6, 1, 5])
    m.losses(su.student, su.teacher, su.batch, su.ctx(0))
    assert m.class_w.tolist() == [1.0] * 10  # the first epoch: w = 1
    m.kappa_sum.copy_(counts)
    m.seen.fill_(40)
    m.losses(su.student, su.teacher, su.batch, su.ctx(0))  # same epoch: no update
    assert m.class_w.tolist() == [1.0] * 10
    m.kappa_sum.copy_(counts)
    m.seen.fill_(40)
    m.losses(su.student, su.teacher, su.batch, su.ctx(1))  # next epoch: update, then reset
    want = expected_weights(counts.tolist(), 40, eps=eps)
    assert m.class_w.tolist() == pytest.approx(want, rel=1e-5)
    assert int(m.seen) == B and int(m.state_epoch) == 1
    assert min(want) == pytest.approx(5 / 6) and max(want) == pytest.approx(5 / 2)


def test_fair_config_rejects_what_the_scripts_lack():
    with pytest.raises(ConfigError, match="IAD-I only"):
        build_method(
            "fair_ard", {"base": "iad", "base_config": {"variant": "II", "natural_teacher": "x"}}
        )
    with pytest.raises(ConfigError, match="natural_teacher"):
        build_method("fair_ard", {"base": "mtard", "fair_mtard_nat_target": "nat_teacher_on_clean"})
    with pytest.raises(ConfigError, match="base_config"):
        build_method("fair_ard", {"base": "ard", "base_config": {"tau": -1}})


# ---------------------------------------------------------------------------------- absld


def absld_rslad(t, s):
    p = softmax(t)
    return (-torch.log(softmax(s)) * p + torch.log(p + 1e-5) * p).mean()


TA = torch.tensor([1.0, 0.5, 2.0, 1.2, 1.0, 1.0, 3.0, 0.8, 1.0, 1.0])
TN = torch.tensor([2.0, 1.5, 0.7, 0.9, 1.0, 1.0, 1.0, 4.0, 1.0, 1.0])


@pytest.mark.parametrize("inplace", [True, False])
def test_absld_terms_and_attack_target(su, inplace):
    m = build_method("absld", {"absld_inplace_temp": inplace})
    m.temps.copy_(torch.stack([TA, TN]))
    terms = m.losses(su.student, su.teacher, su.batch, su.ctx(0))
    t = su.t(su.x)
    ta, tn = TA.to(DT)[su.y][:, None], TN.to(DT)[su.y][:, None]
    t_adv, t_nat = (t / (ta * tn), t / (ta * tn)) if inplace else (t / ta, t / tn)
    close(terms["kl_adv"], 5 / 6 * absld_rslad(t_adv, su.s(su.x_adv)))
    close(terms["kl_nat"], 1 / 6 * absld_rslad(t_nat, su.s(su.x)))
    xp = (su.x + 0.02).clamp(0, 1)
    close(su.objectives[0](xp), kl_rows(t_adv, su.s(xp)).sum())
    # this batch's detached per-class CE sums
    want = torch.zeros(2, 10, dtype=DT)
    want[0].index_add_(0, su.y, ce_rows(su.s(su.x_adv), su.y))
    want[1].index_add_(0, su.y, ce_rows(su.s(su.x), su.y))
    torch.testing.assert_close(m.loss_sum.to(DT), want, rtol=1e-5, atol=1e-6)


def expected_temps(temps, sums, rate):
    out = []
    for tau, L in zip(temps, sums, strict=True):
        mean = sum(L) / len(L)
        gap = [v - mean for v in L]
        big = max(abs(g) for g in gap)
        out.append([min(max(t - rate * g / big, 0.5), 5.0) for t, g in zip(tau, gap, strict=True)])
    return out


@pytest.mark.parametrize("epoch,rate", [(1, 0.1), (214, 0.1), (215, 0.01), (290, 1e-4)])
def test_absld_temperature_update(epoch, rate):
    su = Setup()
    m = build_method("absld")
    temps = torch.stack([TA, TN])
    sums = torch.tensor([[3.0, 9.0, 1.0, 2.0, 40.0, 2.5, 2.0, 7.0, 0.5, 1.0]] * 2)
    sums[1] = sums[1].flip(0)
    m.temps.copy_(temps)
    m.loss_sum.copy_(sums)
    m.state_epoch.fill_(epoch - 1)
    m.losses(su.student, su.teacher, su.batch, su.ctx(epoch))
    want = expected_temps(temps.tolist(), sums.tolist(), rate)
    assert m.temps.tolist()[0] == pytest.approx(want[0], rel=1e-6)
    assert m.temps.tolist()[1] == pytest.approx(want[1], rel=1e-6)
    assert int(m.state_epoch) == epoch


def test_absld_first_epoch_keeps_temperatures_one(su):
    m = build_method("absld")
    m.losses(su.student, su.teacher, su.batch, su.ctx(0))
    assert m.temps.tolist() == [[1.0] * 10] * 2 and float(m.loss_sum.sum()) > 0
    batch = Batch(x=su.x, y=su.y, index=torch.arange(B))
    m.losses(su.student, su.teacher, batch, su.ctx(0))
    assert m.temps.tolist() == [[1.0] * 10] * 2


@pytest.mark.parametrize(
    "method,cfg,epoch,student_seq,teacher_seq",
    [
        ("fair_ard", {"base": "ard"}, 0, "ax", "x"),  # Fair-ARD.py:133-137
        ("fair_ard", {"base": "iad"}, 0, "axa", "xa"),  # Fair-IAD.py:163-171 (basicop, guide)
        ("fair_ard", {"base": "iad"}, 60, "axa", "xa"),
        (
            "fair_ard",
            {"base": "iad", "base_config": {"run_zero_weight_branches": False}},
            0,
            "a",
            "x",
        ),
        ("fair_ard", {"base": "rslad"}, 0, "ax", "x"),  # Fair-RSLAD.py:118-125
        ("fair_ard", {"base": "mtard"}, 0, "ax", "a"),  # Fair-MTARD.py:133-139, N(x) not run
        ("absld", {}, 0, "ax", "x"),  # resnet18_absld_cifar10.py:94-106
    ],
)
def test_forwards_in_the_scripts_order(su, method, cfg, epoch, student_seq, teacher_seq):
    """The train-mode student forwards after the attack, in order (BatchNorm's running
    statistics follow it), and the teacher's inputs: a = x', x = the clean batch."""
    su.student.inputs.clear()
    su.teacher.inputs.clear()
    build_method(method, cfg).losses(su.student, su.teacher, su.batch, su.ctx(epoch))

    def seq(inputs):
        return "".join("a" if t is su.x_adv else "x" if t is su.x else "?" for t in inputs)

    assert seq(su.student.inputs) == student_seq
    assert seq(su.teacher.inputs) == teacher_seq


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fair_counts_the_start_and_not_the_final_iterate(su, mode):
    """A real PGD with no random start in a 1e-9 ball: every iterate is x up to 1e-9 (far from
    any decision boundary of these nets), so kappa_i is the number of objective calls (K = 3, the start counted, the final iterate not) times
    [argmax S(x) = y] in the attack's BatchNorm mode."""
    from ardbench.protocols import Eps
    from ardbench.protocols.sections import AttackConfig
    from ardbench.train.step import make_attack_fn

    tiny = Eps(1, 10**9)
    attack = AttackConfig(eps=tiny, step=tiny, steps=3, random_start="none", student_mode=mode)
    m = build_method("fair_ard", {"base": "ard"})
    ctx = su.ctx(0, attack_fn=make_attack_fn(su.student, attack))
    with torch.no_grad():
        su.student.train(mode == "train")
        right = (su.student(su.x).argmax(1) == su.y).long()
        su.student.train()
    m.losses(su.student, su.teacher, su.batch, ctx)
    assert 0 < int(right.sum()) < B  # both cases occur
    want = torch.zeros(10, dtype=torch.int64).index_add_(0, su.y, 3 * right)
    assert m.kappa_sum.tolist() == want.tolist()
