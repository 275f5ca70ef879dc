"""The tiny float64 networks and batch the golden tests of the later methods share (adaad,
adaiad, igdm, mtard, peeraid, fair_ard, absld): a student, a frozen teacher and a frozen natural
model, a seeded batch with a fixed adversarial point, a recording attack function, and
finite-difference and parameter-gradient checks.

A helper module, not a test module: golden test modules import it (``su = golden_nets.su``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lossmath import close
from torch import nn

from ardbench.methods import Batch, StepContext
from ardbench.protocols import AttackConfig

DT = torch.float64
B, C = 4, 10


class Net(nn.Module):
    def __init__(self, width: int, num_classes: int = C) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x)
        return self.fc(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def make_net(width: int, seed: int, num_classes: int = C, frozen: bool = False) -> Net:
    torch.manual_seed(seed)
    net = Net(width, num_classes).to(DT)
    with torch.no_grad():
        net.fc.weight.mul_(4.0)  # logits far apart: terms far from zero
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval().requires_grad_(False) if frozen else net.train()


class Setup:
    def __init__(self, num_classes: int = C, seed: int = 4) -> None:
        self.num_classes = num_classes
        self.student = make_net(6, 1, num_classes)
        self.teacher = make_net(5, 2, num_classes, frozen=True)
        self.natural = make_net(4, 3, num_classes, frozen=True)
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(B, 3, 8, 8, generator=g, dtype=DT)
        self.y = torch.tensor([1, 3, 0, 7]) % num_classes
        # a large delta so that x - delta leaves [0, 1] (IGDM's unclamped x - d)
        delta = (torch.rand(B, 3, 8, 8, generator=g, dtype=DT) * 2 - 1) * 0.3
        self.x_adv = (self.x + delta).clamp(0, 1)
        self.batch = Batch(x=self.x, y=self.y, index=torch.arange(B))
        self.objectives: list = []
        self.attacks: list = []

    def attack_fn(self, x, objective, attack=None):
        self.objectives.append(objective)
        self.attacks.append(attack)
        return self.x_adv

    def ctx(self, epoch=0, extras=None, total_epochs=200, attack_fn=None):
        return StepContext(
            epoch=epoch,
            total_epochs=total_epochs,
            step=0,
            attack=AttackConfig(),
            attack_fn=attack_fn or self.attack_fn,
            features=lambda m, x: (m(x), None),
            num_classes=self.num_classes,
            extras=extras if extras is not None else {},
        )

    def s(self, x):
        """Student logits, train mode (batch statistics: repeated forwards agree)."""
        with torch.no_grad():
            return self.student(x)

    def s_eval(self, x):
        self.student.eval()
        try:
            with torch.no_grad():
                return self.student(x)
        finally:
            self.student.train()

    def t(self, x):
        with torch.no_grad():
            return self.teacher(x)


@pytest.fixture
def su() -> Setup:
    return Setup()


def fd_check(objective, formula, x_probe, h=1e-6, n=4):
    """The objective's value and its input gradient (top coordinates) against central finite
    differences of the formula; returns the autograd input gradient."""
    xp = x_probe.clone().requires_grad_(True)
    value = objective(xp)
    assert value.dim() == 0
    close(value, formula(x_probe))
    (grad,) = torch.autograd.grad(value, xp)
    flat = grad.flatten()
    assert flat.abs().max() > 0
    for i in flat.abs().argsort(descending=True)[:n].tolist():
        e = torch.zeros_like(flat)
        e[i] = h
        e = e.view_as(x_probe)
        fd = (formula(x_probe + e) - formula(x_probe - e)) / (2 * h)
        assert float(fd) == pytest.approx(float(flat[i]), rel=1e-4, abs=1e-9)
    return grad


def param_grads(net, loss):
    return torch.autograd.grad(loss, [p for p in net.parameters()], allow_unused=True)
