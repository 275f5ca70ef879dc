"""PGD / FGSM / CW-inf, driven by an objective closure, shared by training and evaluation.

Gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no weight
gradients are computed or accumulated inside an attack (the official codes call ``.backward()``,
which computes them and then zeroes them: the same x_adv at a higher cost).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .protocols import AttackConfig

Objective = Callable[[Tensor], Tensor]


def random_start(
    x: Tensor, eps: float, kind: str, norm: str = "Linf", generator: torch.Generator | None = None
) -> Tensor:
    """delta_0: U(-eps, eps) | 0.001 * N(0, I) | 0 (reference §1.5)."""
    if kind == "none":
        return torch.zeros_like(x)
    if kind == "gaussian_0.001":
        return 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if kind == "uniform":
        if norm == "Linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return (2 * u - 1) * eps
        # L2: uniform direction, radius uniform in [0, eps]
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        r = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
        return d / n * r.view(-1, *[1] * (x.dim() - 1)) * eps
    raise ValueError(f"random_start must be uniform, gaussian_0.001 or none; got {kind!r}")


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str = "Linf") -> Tensor:
    """Back into the eps-ball around x, then into [0, 1]."""
    if norm == "Linf":
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        n = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        delta = delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
        x_adv = x + delta
    return x_adv.clamp(0.0, 1.0)


def _ascent(x_adv: Tensor, grad: Tensor, step: float, norm: str) -> Tensor:
    if norm == "Linf":
        return x_adv + step * grad.sign()
    g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
    return x_adv + step * grad / g


def pgd(
    x: Tensor,
    objective: Objective,
    *,
    eps: float,
    step: float,
    steps: int,
    random_start_kind: str = "uniform",
    clamp_start: bool = False,
    norm: str = "Linf",
    generator: torch.Generator | None = None,
    delta0: Tensor | None = None,
) -> Tensor:
    """Projected gradient ascent on ``objective(x_adv)`` (a scalar); returns detached x_adv.

    ``delta0``: the random start itself (instead of drawing one of ``random_start_kind``); the
    evaluator draws it per point so its numbers do not depend on batching or the device's RNG.

    After each step x <- clamp(clamp(x + a*sign(g), x0 - eps, x0 + eps), 0, 1). With
    ``clamp_start`` the start point is clamped to [0,1] before the first gradient (IAD's
    attack_generator, RSLAD's test attack); otherwise it is used as is (ARD, TRADES, RSLAD train).
    """
    x = x.detach()
    if delta0 is None:
        delta0 = random_start(x, eps, random_start_kind, norm, generator)
    elif delta0.shape != x.shape:
        raise ValueError(f"delta0 has shape {tuple(delta0.shape)}, x {tuple(x.shape)}")
    x_adv = x + delta0
    if clamp_start:
        x_adv = x_adv.clamp(0.0, 1.0)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        value = objective(x_adv)
        if value.dim() != 0:
            raise ValueError(
                "an attack objective must return a scalar (sum or mean over the batch)"
            )
        (grad,) = torch.autograd.grad(value, x_adv)
        x_adv = project(_ascent(x_adv.detach(), grad, step, norm), x, eps, norm)
    return x_adv.detach()


def pgd_from_config(
    x: Tensor, objective: Objective, cfg: AttackConfig, generator: torch.Generator | None = None
) -> Tensor:
    return pgd(
        x,
        objective,
        eps=float(cfg.eps),
        step=float(cfg.step),
        steps=cfg.steps,
        random_start_kind=cfg.random_start,
        clamp_start=cfg.clamp_start,
        norm=cfg.norm,
        generator=generator,
    )


def fgsm(x: Tensor, objective: Objective, eps: float) -> Tensor:
    """x' = clamp(x + eps * sign(grad objective(x)), 0, 1); no random start."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    return (x.detach() + eps * grad.sign()).clamp(0.0, 1.0)


def ce_objective(model: torch.nn.Module, y: Tensor, reduction: str = "sum") -> Objective:
    """Cross-entropy to the true labels (sum: per-sample gradients independent of batch size)."""
    return lambda x_adv: torch.nn.functional.cross_entropy(model(x_adv), y, reduction=reduction)


def cw_objective(model: torch.nn.Module, y: Tensor, kappa: float = 50.0) -> Objective:
    """CW-inf margin loss as IAD's attack_generator: ascend -sum clamp(z_y - max_{j!=y} z_j + k, 0)."""

    def objective(x_adv: Tensor) -> Tensor:
        logits = model(x_adv)
        onehot = torch.nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
        correct = (onehot * logits).sum(1)
        other = ((1 - onehot) * logits - 1e4 * onehot).max(1)[0]
        return -torch.clamp(correct - other + kappa, min=0).sum()

    return objective
