"""Golden values for mtard (with b_mtard) and peeraid, and the no-host-read rule for all five
later methods of issue 13 (adaad, adaiad, igdm are in ``test_methods_golden_adaad_adaiad_igdm.py``;
the tiny nets are in ``golden_nets.py``, the math in ``lossmath.py``).

Expected values come from the official code's formulas (zhaoshiji123/MTARD@6480a1b,
zhaoshiji123/MTARD-extension@93506d6, jaewonalive/PeerAiD@cd12e92, as written in
/work/notes/issue13_official_specs.md) in plain tensor algebra and python floats.
"""

from __future__ import annotations

import copy

import golden_nets as g
import pytest
import torch
from golden_nets import B, C, Setup, make_net
from lossmath import ce, close, kl_rows, rslad_kl, softmax

from ardbench.methods import build_method
from ardbench.protocols import AttackConfig
from ardbench.recipes import resolve_config
from ardbench.train.step import make_attack_fn

su = g.su  # the fixture


def entropy_term(t):
    p = softmax(t)
    return float((p * torch.log(p + 1e-5)).mean())


def sign(v: float) -> float:
    return (v > 0) - (v < 0)


# ---------------------------------------------------------------------------------------------
# mtard (mtard/mtard_loss.py, mtard_resnet18_cifar10.py:68-103; b_mtard: the extension's
# resnet18_mtard_cifar10.py:90-166)


def batches(n: int, seed: int = 20):
    """n (x, x_adv) pairs with different content, so that the losses move between iterations."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.rand(B, 3, 8, 8, generator=gen, dtype=g.DT)
        d = (torch.rand(B, 3, 8, 8, generator=gen, dtype=g.DT) * 2 - 1) * 0.1
        out.append((x, (x + d).clamp(0, 1)))
    return out


def run_mtard(su: Setup, m, pairs, epochs):
    from ardbench.methods import Batch

    out = []
    for (x, x_adv), epoch in zip(pairs, epochs, strict=True):
        su.x, su.x_adv = x, x_adv
        batch = Batch(x=x, y=su.y, index=torch.arange(B))
        out.append(m.losses(su.student, su.teacher, batch, su.ctx(epoch, {"natural": su.natural})))
    return out


def expected_mtard(
    su,
    pairs,
    epochs,
    *,
    eta=0.025,
    milestones=(215, 260, 285),
    each_epoch=False,
    b_mtard=False,
    temp_lr=0.001,
    temp_init=1.0,
    num_classes=C,
):
    """The official loop in python floats: this iteration's losses update w before the loss."""
    w_nat, ref, ref_epoch = 0.5, None, None
    temps = [temp_init, temp_init]
    rows = []
    for (x, x_adv), epoch in zip(pairs, epochs, strict=True):
        t_adv, n_nat = su.t(x_adv), None
        with torch.no_grad():
            n_nat = su.natural(x)
        if b_mtard:
            t_adv, n_nat = t_adv / temps[0], n_nat / temps[1]
        kl_a, kl_n = rslad_kl(t_adv, su.s(x_adv)), rslad_kl(n_nat, su.s(x))
        if ref is None or (each_epoch and epoch != ref_epoch):
            ref = (float(kl_a), float(kl_n))
        ref_epoch = epoch
        decay = 0.1 ** sum(1 for m in milestones if epoch >= m)
        r_a, r_n = float(kl_a) / ref[0], float(kl_n) / ref[1]
        w_nat = w_nat - eta * decay * (w_nat - r_n / (r_a + r_n))
        rows.append(((1 - w_nat) * kl_a, w_nat * kl_n, w_nat, list(temps)))
        if b_mtard:
            e_a, e_n = entropy_term(t_adv), entropy_term(n_nat)
            step = temp_lr * decay
            temps = [
                min(max(temps[0] - step * sign(e_a / e_n - 1), 1.0), 10.0),
                min(max(temps[1] - step * sign(e_n / e_a - 1), 1.0), 10.0),
            ]
    return rows, temps


@pytest.mark.parametrize("num_classes", [10, 100])
def test_mtard_weights_over_three_iterations(num_classes):
    su = Setup(num_classes)
    pairs, epochs = batches(3), [0, 0, 0]
    m = build_method("mtard", {"natural_teacher": "x"})
    got = run_mtard(su, m, pairs, epochs)
    rows, _ = expected_mtard(su, pairs, epochs, num_classes=num_classes)
    assert rows[0][2] == 0.5  # r_adv = r_nat = 1 at the first iteration: the target is 1/2
    assert rows[2][2] != 0.5
    for terms, (adv, nat, _, _) in zip(got, rows, strict=True):
        assert set(terms) == {"kl_adv", "kl_nat"}
        close(terms["kl_adv"], adv)
        close(terms["kl_nat"], nat)
    # the state the next step continues from: w_nat and the first iteration's reference
    assert float(m.w_nat) == pytest.approx(rows[-1][2], rel=1e-12)
    x0, xa0 = pairs[0]
    with torch.no_grad():
        ref = [float(rslad_kl(su.t(xa0), su.s(xa0))), float(rslad_kl(su.natural(x0), su.s(x0)))]
    assert m.loss_ref.tolist() == pytest.approx(ref, rel=1e-9)


def test_mtard_eta_decays_at_milestones():
    su = Setup()
    pairs = batches(3)
    for epochs, milestones, cfg in (
        ([214, 215, 215], (215, 260, 285), {}),
        ([0, 1, 2], (1,), {"eta_milestones": [1]}),
    ):
        m = build_method("mtard", {"natural_teacher": "x", **cfg})
        got = run_mtard(su, m, pairs, epochs)
        rows, _ = expected_mtard(su, pairs, epochs, milestones=milestones)
        for terms, (adv, nat, _, _) in zip(got, rows, strict=True):
            close(terms["kl_adv"], adv)
            close(terms["kl_nat"], nat)
        # with no decay the weights would differ
        nodecay, _ = expected_mtard(su, pairs, epochs, milestones=())
        assert abs(nodecay[2][2] - rows[2][2]) > 1e-6


def test_mtard_init_loss_each_epoch():
    su = Setup()
    pairs, epochs = batches(3), [0, 1, 1]
    got = run_mtard(
        su,
        build_method("mtard", {"natural_teacher": "x", "init_loss": "each_epoch"}),
        pairs,
        epochs,
    )
    rows, _ = expected_mtard(su, pairs, epochs, each_epoch=True)
    for terms, (adv, nat, _, _) in zip(got, rows, strict=True):
        close(terms["kl_adv"], adv)
        close(terms["kl_nat"], nat)
    run_ref, _ = expected_mtard(su, pairs, epochs)
    assert abs(run_ref[2][2] - rows[2][2]) > 1e-6  # another reference, other weights


@pytest.mark.parametrize("temp_lr, temp_init", [(0.001, 1.0), (0.5, 3.0)])
def test_b_mtard_temperatures(temp_lr, temp_init):
    su = Setup()
    pairs, epochs = batches(3), [0, 0, 0]
    m = build_method(
        "mtard",
        {"natural_teacher": "x", "b_mtard": True, "temp_lr": temp_lr, "temp_init": temp_init},
    )
    got = run_mtard(su, m, pairs, epochs)
    rows, temps = expected_mtard(
        su, pairs, epochs, b_mtard=True, temp_lr=temp_lr, temp_init=temp_init
    )
    for terms, (adv, nat, _, _) in zip(got, rows, strict=True):
        close(terms["kl_adv"], adv)
        close(terms["kl_nat"], nat)
    assert m.temps.tolist() == pytest.approx(temps, abs=1e-12)
    assert temps != [temp_init, temp_init]  # they moved
    # the temperatures change the loss: MTARD's values differ from the second iteration on
    plain, _ = expected_mtard(su, pairs, epochs)
    assert abs(float(plain[1][0]) - float(rows[1][0])) > 1e-9


def test_mtard_attack_objective_forward_order_and_teachers(su):
    su.student.inputs.clear()
    su.teacher.inputs.clear()
    su.natural.inputs.clear()
    m = build_method("mtard", {"natural_teacher": "x"})
    m.losses(su.student, su.teacher, su.batch, su.ctx(0, {"natural": su.natural}))
    assert [t is su.x_adv for t in su.student.inputs] == [True, False]  # S(x'), then S(x)
    assert su.student.inputs[1] is su.x
    assert su.teacher.inputs == [su.x_adv] and su.natural.inputs[0] is su.x
    su.student.eval()
    try:  # batch-mean CE on the student (eval mode): the teachers are not in the attack
        g.fd_check(su.objectives[0], lambda z: ce(su.s(z), su.y), (su.x + su.x_adv) / 2)
    finally:
        su.student.train()


def test_mtard_state_survives_a_state_dict_roundtrip():
    su = Setup()
    pairs = batches(3)
    a = build_method("mtard", {"natural_teacher": "x", "b_mtard": True, "temp_lr": 0.5})
    run_mtard(su, a, pairs[:2], [0, 0])
    state = copy.deepcopy(a.state_dict())
    assert {"w_nat", "loss_ref", "ref_epoch", "temps"} <= set(state)
    b = build_method("mtard", {"natural_teacher": "x", "b_mtard": True, "temp_lr": 0.5})
    b.load_state_dict(state)
    ta = run_mtard(su, a, pairs[2:], [0])[0]
    tb = run_mtard(su, b, pairs[2:], [0])[0]
    for k in ta:
        close(tb[k], ta[k], rtol=0, atol=0)
    fresh = run_mtard(
        su, build_method("mtard", {"natural_teacher": "x", "b_mtard": True}), pairs[2:], [0]
    )[0]
    assert not torch.allclose(fresh["kl_nat"], ta["kl_nat"])


def test_mtard_needs_the_clean_teacher(su):
    m = build_method("mtard")
    assert m.extra_models() == {"natural": None}
    assert build_method("mtard", {"natural_teacher": "run:N"}).extra_models() == {
        "natural": "run:N"
    }
    with pytest.raises(ValueError, match="natural_teacher"):
        m.losses(su.student, su.teacher, su.batch, su.ctx(0))


# ---------------------------------------------------------------------------------------------
# peeraid (main.py:333-404, attack_function.py:59-84)


def peeraid_setup(su: Setup, cfg=None):
    m = build_method("peeraid", cfg or {})
    m.setup(
        student=su.student,
        teacher=None,
        num_classes=C,
        feature_dims=(6, None),
        student_factory=lambda: make_net(6, 11),
    )
    return m


def test_peeraid_builds_a_fresh_peer_with_the_factory(su):
    m = peeraid_setup(su)
    assert m.peer is not su.student and type(m.peer) is type(su.student) and m.peer.training
    fresh = make_net(6, 11)
    for a, b in zip(m.peer.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert {id(p) for p in m.parameters()} == {id(p) for p in m.peer.parameters()}
    with pytest.raises(ValueError, match="student_factory"):
        build_method("peeraid").setup(
            student=su.student, teacher=None, num_classes=C, feature_dims=(6, None)
        )


def test_peeraid_terms_forwards_and_attack(su):
    m = peeraid_setup(su)
    peer0 = copy.deepcopy(m.peer)  # its running statistics before the step (attack target)
    su.student.inputs.clear()
    terms = m.losses(su.student, None, su.batch, su.ctx(0))
    s_inputs, p_inputs = list(su.student.inputs), list(m.peer.inputs)
    assert set(terms) == {"peer_ce", "peer_kl", "ce_adv", "kl_peer", "kl_nat"}
    with torch.no_grad():
        p_adv = copy.deepcopy(peer0).train()(su.x_adv)
    s_adv, s_nat = su.s(su.x_adv), su.s(su.x)
    close(terms["peer_ce"], ce(p_adv, su.y))  # gamma1 1
    close(terms["peer_kl"], 0.1 * kl_rows(s_adv, p_adv).mean() / C)  # gamma2 tr^2 KL_mean_all
    close(terms["ce_adv"], 0.0)  # lambda1 0
    close(terms["kl_peer"], 25.0 * kl_rows(p_adv, s_adv, 5.0).mean() / C)
    close(terms["kl_nat"], 25.0 * kl_rows(s_nat, s_adv, 5.0).mean() / C)
    # P(x) (eval, no grad) then P(x'); S(x'), S(x') again, S(x)
    assert p_inputs[0] is su.x and p_inputs[1] is su.x_adv and len(p_inputs) == 2
    assert [t is su.x_adv for t in s_inputs] == [True, True, False] and s_inputs[2] is su.x
    # attack: sum_i KL_i(softmax(P_eval(x)) || softmax(S(x_k))), the peer logits a constant
    with torch.no_grad():
        p_nat = peer0.eval()(su.x)
    su.student.eval()
    try:
        g.fd_check(su.objectives[0], lambda z: kl_rows(p_nat, su.s(z)).sum(), (su.x + su.x_adv) / 2)
    finally:
        su.student.train()


def test_peeraid_gradients_and_detach_flags(su):
    def grads(cfg):
        s = Setup()
        m = peeraid_setup(s, cfg)
        terms = m.losses(s.student, None, s.batch, s.ctx(0))
        return s, m, terms

    s, m, terms = grads({})
    # the student gets gradient from L_P through the undetached target S(x')
    got = g.param_grads(s.student, terms["peer_kl"])
    ref_s, ref_p = Setup().student, make_net(6, 11)  # the same initial weights
    expected = 0.1 * kl_rows(ref_s(s.x_adv), ref_p(s.x_adv)).mean() / C
    for a, b in zip(got, g.param_grads(ref_s, expected), strict=True):
        torch.testing.assert_close(a, b)
    # the peer gets none from the student's loss (P(x') detached there), some from L_P
    assert all(x is None for x in g.param_grads(m.peer, terms["kl_peer"] + terms["kl_nat"]))
    assert all(x is not None and x.abs().max() > 0 for x in g.param_grads(m.peer, terms["peer_ce"]))
    s2, _, t2 = grads({"peer_target_detach": True})
    assert all(x is None for x in g.param_grads(s2.student, t2["peer_kl"]))
    close(t2["peer_kl"], terms["peer_kl"])
    # kl_nat: gradient through both S(x) and S(x') unless nat_target_detach
    s3, _, t3 = grads({"nat_target_detach": True})
    close(t3["kl_nat"], terms["kl_nat"])
    a = g.param_grads(s.student, terms["kl_nat"])
    b = g.param_grads(s3.student, t3["kl_nat"])
    assert not torch.allclose(a[0], b[0])


def test_peeraid_one_student_adv_forward(su):
    m = peeraid_setup(su, {"student_adv_forwards": 1, "lambda1": 0.5, "gamma2": 1.0})
    su.student.inputs.clear()
    terms = m.losses(su.student, None, su.batch, su.ctx(0))
    assert len(su.student.inputs) == 2
    close(terms["ce_adv"], 0.5 * ce(su.s(su.x_adv), su.y))


def test_peeraid_joint_sgd_equals_two_identical_optimisers(su):
    """The official peer and student optimisers (same settings, one backward) and ardbench's one
    SGD over both parameter sets make the same update."""
    from ardbench.protocols import TrainConfig
    from ardbench.train.speed import SpeedPlan, make_optimizer, param_groups

    m = peeraid_setup(su)
    tc = TrainConfig(lr=0.1, momentum=0.9, weight_decay=2e-4)
    groups = param_groups(su.student, m, tc)
    assert len(groups) == 1  # the peer joins the student's group
    nets = [copy.deepcopy(su.student), copy.deepcopy(m.peer)]
    one = make_optimizer(groups, tc, SpeedPlan(device="cpu"))
    two = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4) for n in nets]
    for _ in range(2):
        for opt, (student, peer) in ((one, (su.student, m.peer)), (two, nets)):
            for o in opt if isinstance(opt, list) else [opt]:
                o.zero_grad()
            loss = (
                ce(student(su.x), su.y)
                + ce(peer(su.x_adv), su.y)
                + kl_rows(student(su.x_adv), peer(su.x_adv)).mean()
            )
            loss.backward()
            for o in opt if isinstance(opt, list) else [opt]:
                o.step()
    for a, b in zip(
        [*su.student.parameters(), *m.peer.parameters()],
        [*nets[0].parameters(), *nets[1].parameters()],
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_peeraid_param_groups_for_own_peer_settings(su):
    from ardbench.protocols import TrainConfig
    from ardbench.train.speed import SpeedPlan, make_optimizer, param_groups

    m = peeraid_setup(su, {"peer_lr_scale": 0.5, "peer_weight_decay": 5e-4, "peer_momentum": 0.0})
    tc = TrainConfig(lr=0.1, momentum=0.9, weight_decay=2e-4)
    opt = make_optimizer(param_groups(su.student, m, tc), tc, SpeedPlan(device="cpu"))
    main, peer = opt.param_groups
    assert (main["lr"], main["weight_decay"], main["momentum"]) == (0.1, 2e-4, 0.9)
    assert (peer["lr"], peer["weight_decay"], peer["momentum"]) == (0.05, 5e-4, 0.0)
    assert len(peer["params"]) == len(list(m.peer.parameters()))


# ---------------------------------------------------------------------------------------------
# no host reads in losses() and the attack objectives


class HostRead(AssertionError):
    pass


@pytest.fixture
def no_host_reads(monkeypatch):
    """A context in which reading a tensor's value on the host raises."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        with monkeypatch.context() as mp:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__"):

                def boom(self, *a, _name=name, **k):
                    raise HostRead(f"host read: Tensor.{_name}")

                mp.setattr(torch.Tensor, name, boom)
            yield

    return guard


def _probe(guard, name, cfg, epochs, extras_fn=None, steps=2):
    su = Setup()
    m = build_method(name, cfg)
    m.setup(
        student=su.student,
        teacher=su.teacher,
        num_classes=C,
        feature_dims=(6, 5),
        student_factory=lambda: make_net(6, 11),
    )
    attack = AttackConfig(steps=2, random_start="gaussian_0.001")
    real = make_attack_fn(su.student, attack)
    extras = {"natural": su.natural}
    for epoch in epochs:
        for _ in range(steps):
            ctx = su.ctx(epoch, extras, attack_fn=real)
            with guard():
                terms = m.losses(su.student, su.teacher, su.batch, ctx)
            sum(terms.values()).backward()  # outside the guard (the trainer's work)
    return terms


@pytest.mark.parametrize(
    "name, cfg, epochs",
    [
        ("adaad", {}, [0]),
        ("adaiad", {}, [59, 60]),
        ("igdm", {}, [0, 250]),
        ("igdm", {"base": "ard", "swapped_eps_step": True}, [0]),
        ("igdm", {"base": "rslad"}, [0]),
        ("mtard", {"natural_teacher": "x"}, [0, 215]),
        ("mtard", {"natural_teacher": "x", "b_mtard": True, "init_loss": "each_epoch"}, [0, 1]),
        ("peeraid", {}, [0]),
    ],
)
def test_losses_make_no_host_read(no_host_reads, name, cfg, epochs):
    terms = _probe(no_host_reads, name, cfg, epochs)
    assert all(torch.isfinite(v) for v in terms.values())


def test_the_host_read_guard_catches_reads(no_host_reads):
    t = torch.ones(2)
    reads = (
        lambda: t.sum().item(),
        lambda: t.tolist(),
        lambda: 1 if t[0] > 0 else 0,  # a python `if` on a tensor
        lambda: float(t[0]),
        lambda: int(t[0]),
    )
    for read in reads:
        with no_host_reads(), pytest.raises(HostRead):
            read()


# ---------------------------------------------------------------------------------------------
# faithful protocols (the official scripts' settings; specs file sections 1.3, 3.4, 4.2, 5.1)


@pytest.mark.parametrize(
    "name, epochs, milestones, wd, seed",
    [
        ("adaad", 200, [100, 150], 5e-4, 42),
        ("adaiad", 200, [100, 150], 5e-4, 42),
        ("igdm", 200, [100, 150], 2e-4, 0),
        ("mtard", 300, [215, 260, 285], 2e-4, 0),
        ("peeraid", 300, [214, 259, 284], 2e-4, 0),
    ],
)
def test_faithful_protocols(name, epochs, milestones, wd, seed):
    cfg = resolve_config(name)
    a, t = cfg.attack, cfg.train
    assert (a.eps, a.step, a.steps) == (8 / 255, 2 / 255, 10)
    assert (a.random_start, a.clamp_start, a.student_mode) == ("gaussian_0.001", False, "eval")
    assert (t.epochs, list(t.milestones), t.weight_decay, t.seed) == (epochs, milestones, wd, seed)
    assert (t.lr, t.momentum, t.nesterov, t.batch_size, t.lr_schedule, t.gamma) == (
        0.1,
        0.9,
        False,
        128,
        "multistep",
        0.1,
    )
    if name == "mtard":  # eta decays with the faithful lr milestones
        assert list(build_method("mtard").config.eta_milestones) == milestones
    # PeerAiD reports the SWA of the students from its first lr milestone on
    expected = ("swa", 214) if name == "peeraid" else ("last", None)
    assert (cfg.checkpoint.rule, cfg.checkpoint.swa_start) == expected
