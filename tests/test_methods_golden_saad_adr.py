"""Golden tests of saad and adr: every term, reduction, attack objective and per-step state,
against formulas written out here in float64 from the official code (HongsinLee/saad@295121c
saad.py / attacks.py / utils.py; yuyuwu5/ADR@515da0e src/adr.py / advTrainer.py /
util/utils.py), on tiny linear networks whose input gradients are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lossmath import np_kl_rows, np_softmax
from torch import Tensor, nn

from ardbench.methods import Batch, StepContext, build_method
from ardbench.protocols import AttackConfig, Eps, get_protocol
from ardbench.recipes import resolve_config
from ardbench.train.trainer import resume, train

C, D = 4, 3 * 2 * 2  # classes, input size (3x2x2 images)
ATTACK = AttackConfig(eps=Eps(8, 255), step=Eps(2, 255), steps=1)


class Linear(nn.Module):
    """logits = W flatten(x) + b, recording the inputs it sees (forward order)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(C, D, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(C, generator=g, dtype=torch.float64))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return x.flatten(1) @ self.w.T + self.b


def _data(seed: int = 3, b: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 2, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1
    y = torch.randint(0, C, (b,), generator=g)
    sign = torch.randint(0, 2, x.shape, generator=g).to(x.dtype) * 2 - 1
    return x, y, x + sign * 8 / 255


def _ctx(epoch: int, total: int, x_adv: Tensor, objectives: list, steps: int = 7) -> StepContext:
    def attack_fn(x, objective, attack=None):
        objectives.append(objective)
        return x_adv

    return StepContext(
        epoch=epoch,
        total_epochs=total,
        step=0,
        attack=ATTACK,
        attack_fn=attack_fn,
        features=None,  # type: ignore[arg-type]
        num_classes=C,
        steps_per_epoch=steps,
    )


def lin(net: Linear, x: Tensor) -> np.ndarray:
    w, b = net.w.detach().numpy(), net.b.detach().numpy()
    return x.reshape(len(x), -1).numpy() @ w.T + b


# ------------------------------------------------------------------------------------ saad


def saad_by_hand(student, teacher, x, y, x_adv, epoch1, den, alpha, beta, gamma):
    """saad.py:53-82 in numpy float64."""
    d = x_adv - x
    t_nat, t_plus, t_minus = lin(teacher, x), lin(teacher, x_adv), lin(teacher, x - d)
    s_plus, s_minus, s_nat = lin(student, x_adv), lin(student, x - d), lin(student, x)
    p = np_softmax(t_plus)
    if gamma == 1.0:
        h = -(p * np.log(p + 1e-12)).sum(axis=1)
    else:
        h = np.log((p**gamma).sum(axis=1) + 1e-12) / (1 - gamma)
    w = np.maximum(0.0, 5 * (h - h.min()))
    wn = (w - w.min()) / (w.max() - w.min() + 1e-8)
    kl_adv = np_kl_rows(t_plus, s_plus)
    igdm = alpha * (epoch1 / den) * np_kl_rows(t_plus - t_minus, s_plus - s_minus)
    kl_nat = np_kl_rows(t_nat, s_nat)
    return {
        "kl_adv": (w * kl_adv).mean(),
        "igdm": (w * igdm).mean(),
        "kl_nat": (beta * (1 - wn) * kl_nat).mean(),
        "total": (w * (kl_adv + igdm) + beta * (1 - wn) * kl_nat).mean(),
    }


@pytest.mark.parametrize(
    ("overrides", "epoch", "total"),
    [({}, 0, 200), ({"beta": 0.7, "alpha": 2.0}, 49, 60), ({"gamma": 2.0, "ramp_den": 10}, 3, 50)],
)
def test_saad_terms(overrides, epoch, total):
    method = build_method("saad", overrides)
    cfg = method.config
    student, teacher = Linear(0), Linear(1)
    x, y, x_adv = _data()
    ctx = _ctx(epoch, total, x_adv, [])
    terms = method.losses(student, teacher, Batch(x, y, torch.arange(len(y))), ctx)
    den = cfg.ramp_den or total
    ref = saad_by_hand(
        student, teacher, x, y, x_adv, epoch + 1, den, cfg.alpha, cfg.beta, cfg.gamma
    )
    assert set(terms) == {"kl_adv", "igdm", "kl_nat"}
    for key in ("kl_adv", "igdm", "kl_nat"):
        assert terms[key].item() == pytest.approx(ref[key], rel=1e-10, abs=1e-14), key
    assert sum(t.item() for t in terms.values()) == pytest.approx(ref["total"], rel=1e-10)
    assert ref["kl_adv"] > 0 and ref["igdm"] > 0
    # student forwards after the attack, in the official order: S(x'), S(x - d), S(x)
    assert len(student.seen) == 3
    for seen, want in zip(student.seen, (x_adv, 2 * x - x_adv, x), strict=True):
        assert torch.equal(seen, want)


def test_saad_x_minus_not_clipped_unless_flagged():
    x, y, _ = _data()
    x = x.clone()
    x[0] = 0.0  # at the border: x - d leaves [0, 1] where d < 0
    x_adv = (x + 8 / 255).clamp(0, 1)
    x_adv[0] = 8 / 255
    for flag, lo in ((False, -8 / 255), (True, 0.0)):
        student, teacher = Linear(0), Linear(1)
        build_method("saad", {"igdm_minus_clip": flag}).losses(
            student, teacher, Batch(x, y, torch.arange(len(y))), _ctx(0, 200, x_adv, [])
        )
        assert student.seen[1].min().item() == pytest.approx(lo)


def test_saad_zero_weight_branch():
    x, y, x_adv = _data()
    student, teacher = Linear(0), Linear(1)
    terms = build_method("saad", {"run_zero_weight_branches": False}).losses(
        student, teacher, Batch(x, y, torch.arange(len(y))), _ctx(0, 200, x_adv, [])
    )
    assert set(terms) == {"kl_adv", "igdm"} and len(student.seen) == 2


@pytest.mark.parametrize("target_grad", [True, False])
def test_saad_attack_objective_and_its_gradient(target_grad):
    """attacks.py:138-194: T~ = T(x), T~_y += lambda <g, x' - x>, g = grad_x T_y(x) (= W_y for a
    linear teacher); objective sum_i KL_i(softmax(T~) || softmax(S(x'))); with the flag the
    input gradient also flows through T~."""
    lam = 0.6
    method = build_method("saad", {"inner_lambda": lam, "saad_attack_target_grad": target_grad})
    student, teacher = Linear(0), Linear(1)
    x, y, x_adv = _data()
    objectives: list = []
    method.losses(
        student, teacher, Batch(x, y, torch.arange(len(y))), _ctx(0, 200, x_adv, objectives)
    )
    (objective,) = objectives
    xa = (
        x
        + (torch.rand(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype) - 0.5)
        * 0.06
    )
    xa.requires_grad_(True)
    value = objective(xa)
    (grad,) = torch.autograd.grad(value, xa)

    wt, ws = teacher.w.detach().numpy(), student.w.detach().numpy()
    g = wt[y.numpy()]  # (B, D): the label row of the teacher's weights
    dx = (xa.detach() - x).reshape(len(x), -1).numpy()
    t_tilde = lin(teacher, x)
    rows = np.arange(len(y))
    t_tilde[rows, y.numpy()] += lam * (g * dx).sum(axis=1)
    s = lin(student, xa.detach())
    kl = np_kl_rows(t_tilde, s)
    assert value.item() == pytest.approx(kl.sum(), rel=1e-10)
    p, q = np_softmax(t_tilde), np_softmax(s)
    grad_ref = (q - p) @ ws  # through the student
    if target_grad:  # d KL / d t~_y = p_y (log p_y - log q_y - KL), times lam g
        py, qy = p[rows, y.numpy()], q[rows, y.numpy()]
        grad_ref = grad_ref + (lam * py * (np.log(py) - np.log(qy) - kl))[:, None] * g
    np.testing.assert_allclose(grad.reshape(len(x), -1).numpy(), grad_ref, rtol=1e-9, atol=1e-12)


def test_saad_protocol_swa_from_epoch_95():
    p = get_protocol("saad-cifar10")
    assert p.checkpoint.rule == "swa" and p.checkpoint.swa_start == 94  # 1-based 95
    assert p.attack.random_start == "gaussian_0.001" and p.attack.student_mode == "eval"
    assert p.train.weight_decay == 2e-4 and list(p.train.milestones) == [100, 150]


# ------------------------------------------------------------------------------------- adr


def cosine_by_hand(base: float, final: float, epochs: int, n: int) -> np.ndarray:
    """util/utils.py cosine_scheduler without warm-up."""
    iters = np.arange(epochs * n)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))


def label_by_hand(logits: np.ndarray, y: np.ndarray, tau: float, interp: float) -> np.ndarray:
    p = np_softmax(logits / tau)
    rows = np.arange(len(y))
    lam = np.clip(interp - (p.max(axis=1) - p[rows, y]), 0.0, 1.0)[:, None]
    return lam * p + (1 - lam) * np.eye(p.shape[1])[y]


def _adr(overrides=None, seed=0):
    method = build_method("adr", overrides or {})
    student = Linear(seed)
    method.setup(student=student, teacher=None, num_classes=C, feature_dims=(D, None))
    return method, student


def test_adr_label_loss_and_attack_objective_at_step_s():
    epochs, n, s = 3, 7, 11
    method, student = _adr()
    method.steps_done.fill_(s)
    x, y, x_adv = _data()
    objectives: list = []
    terms = method.losses(
        student,
        None,
        Batch(x, y, torch.arange(len(y))),
        _ctx(1, epochs, x_adv, objectives, steps=n),
    )
    tau = cosine_by_hand(2.5, 2.0, epochs, n)[s]
    interp = cosine_by_hand(0.7, 0.95, epochs, n)[s]
    assert 2.0 < tau < 2.5 and 0.7 < interp < 0.95
    # the EMA had not moved at step s: it is the student's copy (no optimiser step in between)
    target = label_by_hand(lin(student, x), y.numpy(), tau, interp)
    assert np.allclose(target.sum(axis=1), 1.0)
    log_q = np.log(np_softmax(lin(student, x_adv)))
    assert terms["ce_adv"].item() == pytest.approx(-(target * log_q).sum(axis=1).mean(), rel=1e-10)
    (objective,) = objectives
    log_q_adv = np.log(np_softmax(lin(student, x)))
    assert objective(x).item() == pytest.approx(-(target * log_q_adv).sum(), rel=1e-10)
    assert method.steps_done.item() == s + 1


def test_adr_schedules_end_to_end():
    epochs, n = 2, 3
    method, _ = _adr()
    from ardbench.methods.adr import cosine_at

    for s in range(epochs * n):
        got = cosine_at(2.5, 2.0, torch.tensor(s), epochs * n).item()
        assert got == pytest.approx(cosine_by_hand(2.5, 2.0, epochs, n)[s], rel=1e-14)


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(D).double()
        self.fc = nn.Linear(D, C).double()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x.flatten(1)))


@pytest.mark.parametrize("buffers", [True, False])
def test_adr_ema_after_each_optimiser_step(buffers):
    """timm ModelEmaV2 (decay 0.995, whole state dict) from the initial weights, updated after
    every optimiser step; the label at step k uses the EMA after k updates."""
    torch.manual_seed(0)
    student = BNNet()
    method = build_method("adr", {"adr_ema_buffers": buffers})
    method.setup(student=student, teacher=None, num_classes=C, feature_dims=(D, None))
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    ref = {k: v.detach().clone().double() for k, v in student.state_dict().items()}
    x, y, x_adv = _data(b=6)
    for _ in range(3):
        student.train()
        terms = method.losses(student, None, Batch(x, y, torch.arange(6)), _ctx(0, 5, x_adv, []))
        opt.zero_grad()
        terms["ce_adv"].backward()
        opt.step()
        with torch.no_grad():  # after the step, as advTrainer.py:335
            for name, v in student.state_dict().items():
                if name.endswith("num_batches_tracked"):
                    continue
                if buffers or "running" not in name:
                    ref[name] = 0.995 * ref[name] + 0.005 * v.double()
                else:
                    ref[name] = v.double().clone()
    # the 3rd update is applied at the start of the next step
    method.losses(student, None, Batch(x, y, torch.arange(6)), _ctx(0, 5, x_adv, []))
    ema = method.ema.state_dict()
    for name, want in ref.items():
        if name.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(ema[name].double(), want, rtol=1e-12, atol=1e-14, msg=name)
    assert not list(method.parameters())  # the optimiser never sees the EMA
    assert method.steps_done.item() == 4


def test_adr_is_a_teacher_free_reference_row():
    cls = type(build_method("adr"))
    assert cls.needs_teacher is False and "reference row" in cls.teacherless_note
    p = get_protocol("adr-cifar10")
    assert p.attack.student_mode == "train" and p.attack.clamp_start is True
    assert p.train.nesterov is True and p.train.weight_decay == 5e-4


# ------------------------------------------------------------------------ resume is bitwise


def _cfg(method, npz, teacher, *sets):
    cli = {"dataset": f"npz:{npz}", "student": "small_cnn", "train": {"epochs": 2}}
    if teacher:
        cli["teacher"] = f"small_cnn:{teacher}"
    return resolve_config(
        method,
        cli=cli,
        sets=[
            "train.batch_size=16",
            "attack.steps=1",
            "eval.batch_size=16",
            "eval.attacks=clean",
            "train.probe=0",
            *sets,
        ],
    )


@pytest.mark.parametrize(
    ("method", "sets"),
    [("saad", ("checkpoint.rule=swa", "checkpoint.swa_start=0")), ("adr", ())],
)
def test_resume_is_bitwise(method, sets, tiny_npz, teacher_file, tmp_path):
    """2 epochs == 1 epoch + resume + 1 epoch: weights, method state (ADR's EMA and step
    count) and the SWA average."""
    cfg = _cfg(method, tiny_npz, teacher_file if method == "saad" else None, *sets)
    full = train(cfg, runs_dir=tmp_path / "a", progress=False)
    part = train(cfg, runs_dir=tmp_path / "b", progress=False, stop_after_epoch=1)
    done = resume(part.run_dir, progress=False)
    a = torch.load(full.run_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(done.run_dir / "checkpoint.pt", weights_only=True)
    for part_name in ("student", "method", *(("swa",) if method == "saad" else ())):
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), (part_name, k)
    if method == "adr":
        assert a["method"]["steps_done"].item() == 2 * 3  # 48 images, batch 16
        assert any(k.startswith("ema.") for k in a["method"])
    ma = torch.load(full.run_dir / "model.pt", weights_only=True)
    mb = torch.load(done.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_cosine_matches_numpy_to_the_last_bit_shape():
    """The schedule is float64 on the device, as the numpy arrays it replaces."""
    from ardbench.methods.adr import cosine_at

    v = cosine_at(0.7, 0.95, torch.tensor(5), 10)
    assert v.dtype == torch.float64
    assert v.item() == 0.95 + 0.5 * (0.7 - 0.95) * (1 + math.cos(math.pi * 5 / 10))
