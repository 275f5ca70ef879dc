from __future__ import annotations

import torch
import torch.nn.functional as F

from ardbench.attacks import ce_objective, fgsm, pgd, project, random_start
from ardbench.train.check import TinyNet


def _setup():
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 10, (16,))
    return model, x, y


def test_pgd_stays_in_ball_and_box_and_increases_objective():
    model, x, y = _setup()
    eps = 8 / 255
    obj = ce_objective(model, y)
    for start in ("uniform", "gaussian_0.001", "none"):
        x_adv = pgd(x, obj, eps=eps, step=2 / 255, steps=10, random_start_kind=start)
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert not x_adv.requires_grad
        with torch.no_grad():
            assert obj(x_adv) > obj(x)


def test_pgd_computes_no_weight_gradients():
    model, x, y = _setup()
    pgd(x, ce_objective(model, y), eps=8 / 255, step=2 / 255, steps=3)
    assert all(p.grad is None for p in model.parameters())


def test_clamp_start():
    x = torch.zeros(4, 3, 4, 4)
    seen = []

    def obj(xa):
        seen.append(xa.detach().clone())
        return xa.sum()

    pgd(x, obj, eps=0.1, step=0.01, steps=1, clamp_start=False)
    assert seen[-1].min() < 0  # start used as drawn (ARD, TRADES)
    pgd(x, obj, eps=0.1, step=0.01, steps=1, clamp_start=True)
    assert seen[-1].min() >= 0  # clamped start (IAD attack_generator)


def test_random_start_distributions():
    x = torch.zeros(1000, 3, 4, 4)
    u = random_start(x, 0.1, "uniform")
    assert u.abs().max() <= 0.1 and u.abs().mean() > 0.04
    g = random_start(x, 0.1, "gaussian_0.001")
    assert abs(float(g.std()) - 0.001) < 1e-4
    assert random_start(x, 0.1, "none").abs().max() == 0


def test_project_l2():
    x = torch.zeros(2, 3, 4, 4) + 0.5
    xa = x + torch.randn_like(x)
    p = project(xa, x, 0.5, norm="L2")
    assert ((p - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


def test_fgsm_is_one_signed_step():
    model, x, y = _setup()
    x_adv = fgsm(x, ce_objective(model, y), 8 / 255)
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)[0]
    assert torch.allclose(x_adv, (x + 8 / 255 * g.sign()).clamp(0, 1))
