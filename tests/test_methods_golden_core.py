"""Golden values for natural, kd, pgd_at and trades: expected terms are computed here from the
written formulas with plain tensor algebra, independently of ardbench.methods.losses."""

from __future__ import annotations

import pytest
import torch
from lossmath import ce, kl_rows

from ardbench.methods import Batch, build_method
from ardbench.methods.base import StepContext
from ardbench.models import logits_and_features
from ardbench.protocols import AttackConfig
from ardbench.train.check import TinyNet


@pytest.fixture
def fixed():
    torch.manual_seed(0)
    student = TinyNet(width=8).train()
    teacher = TinyNet(width=12).eval().requires_grad_(False)
    with torch.no_grad():  # sharper logits: KL terms of order 1, well above fp32 rounding
        student.fc.weight.mul_(20)
        teacher.fc.weight.mul_(20)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    x_adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 0.5).clamp(0, 1)  # far: big terms
    return student, teacher, Batch(x=x, y=y, index=torch.arange(6)), x_adv


def context(x_adv, captured):
    def attack_fn(x, objective):
        captured.append(objective)
        return x_adv

    return StepContext(
        epoch=0,
        total_epochs=10,
        step=0,
        attack=AttackConfig(),
        attack_fn=attack_fn,
        features=logits_and_features,
    )


def test_natural(fixed):
    student, teacher, batch, _ = fixed
    terms = build_method("natural").losses(student, None, batch, context(None, []))
    assert set(terms) == {"ce_nat"}
    with torch.no_grad():
        assert torch.allclose(terms["ce_nat"], ce(student(batch.x), batch.y), rtol=1e-5)


def test_pgd_at_loss_and_attack_objective(fixed):
    student, _, batch, x_adv = fixed
    cap = []
    terms = build_method("pgd_at").losses(student, None, batch, context(x_adv, cap))
    with torch.no_grad():
        assert torch.allclose(terms["ce_adv"], ce(student(x_adv), batch.y), rtol=1e-5)
        # objective: summed CE to the labels
        assert torch.allclose(cap[0](x_adv), 6 * ce(student(x_adv), batch.y), rtol=1e-5)
    _check_objective_gradient_sign(cap[0], x_adv)


def _check_objective_gradient_sign(objective, x0):
    """The objective increases along its own input gradient (finite difference)."""
    xr = x0.clone().requires_grad_(True)
    g = torch.autograd.grad(objective(xr), xr)[0]
    with torch.no_grad():
        base = objective(x0)
        assert objective(x0 + 1e-3 * g.sign()) > base


@pytest.mark.parametrize(
    "preset,alpha,ce_w,tau,per_class",
    [("ard_lineage", 0.5, 0.5, 1.0, True), ("repdistiller", 0.9, 0.1, 4.0, False)],
)
def test_kd(fixed, preset, alpha, ce_w, tau, per_class):
    student, teacher, batch, _ = fixed
    m = build_method("kd", {"kd_preset": preset})
    terms = m.losses(student, teacher, batch, context(None, []))
    with torch.no_grad():
        s, t = student(batch.x), teacher(batch.x)
        kl = kl_rows(t, s, tau).mean()
        if per_class:  # nn.KLDivLoss() mean over B*C entries
            kl = kl / 10
        assert torch.allclose(terms["kl_nat"], alpha * tau**2 * kl, rtol=1e-5)
        assert torch.allclose(terms["ce_nat"], ce_w * ce(s, batch.y), rtol=1e-5)


def test_kd_overrides():
    m = build_method("kd", {"alpha": 0.7})
    assert m.config.resolved()["ce_weight"] == pytest.approx(0.3)


def test_trades(fixed):
    student, _, batch, x_adv = fixed
    cap = []
    terms = build_method("trades").losses(student, None, batch, context(x_adv, cap))
    with torch.no_grad():
        s_nat, s_adv = student(batch.x), student(x_adv)
        assert torch.allclose(terms["ce_nat"], ce(s_nat, batch.y), rtol=1e-5)
        assert torch.allclose(terms["kl_adv"], 6.0 * kl_rows(s_nat, s_adv).sum() / 6, rtol=1e-5)
        # attack objective: summed KL(sm(S(x)) || sm(S(x')))
        assert torch.allclose(cap[0](x_adv), kl_rows(s_nat, s_adv).sum(), rtol=1e-5)
    _check_objective_gradient_sign(cap[0], x_adv)


def test_trades_target_detach_changes_gradient_not_value(fixed):
    student, _, batch, x_adv = fixed
    grads, values = [], []
    for detach in (False, True):
        student.zero_grad()
        m = build_method("trades", {"target_detach": detach, "beta": 6.0})
        terms = m.losses(student, None, batch, context(x_adv, []))
        terms["kl_adv"].backward()
        values.append(float(terms["kl_adv"].detach()))
        grads.append(student.fc.weight.grad.clone())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert not torch.allclose(grads[0], grads[1])
