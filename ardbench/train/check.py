"""The method contract, checked on tiny models in seconds (``ardbench check --method NAME``).

The same checks run in the test suite over every registered method, so a new method is tested
the moment it is registered.
"""

from __future__ import annotations

import copy
import functools
import operator
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..methods import Batch, Method, StepContext, build_method, check_losses, get_method
from ..methods.base import AttackFn
from ..models import feature_dim, logits_and_features
from ..protocols import AttackConfig, Eps
from .host_reads import count_host_reads
from .step import TrainStep, freeze, make_attack_fn


class TinyNet(nn.Module):
    """conv-BN-ReLU-pool-linear: BatchNorm so that mode and running-statistics bugs show."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(x))), 1).flatten(1)
        return self.fc(f), f

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


TOTAL_EPOCHS = 200  # the tiny runs' nominal length: checks look at its first and last epoch
TINY_ATTACK = AttackConfig(eps=Eps(8, 255), step=Eps(2, 255), steps=2)

Setup = tuple[Method[Any], nn.Module, nn.Module, dict[str, nn.Module], Batch]


def tiny_setup(
    method_name: str, seed: int = 0, batch_size: int = 8, num_classes: int = 10
) -> Setup:
    """(method, student, teacher, extras, batch) on tiny models; reused by tests."""
    torch.manual_seed(seed)
    method = build_method(method_name)
    student = TinyNet(num_classes, width=8).train()
    teacher = freeze(TinyNet(num_classes, width=12))
    extras = {name: freeze(TinyNet(num_classes, width=6)) for name in method.extra_models()}
    method.setup(
        student=student,
        teacher=teacher,
        num_classes=num_classes,
        feature_dims=(feature_dim(student), feature_dim(teacher)),
        student_factory=lambda: TinyNet(num_classes, width=8).train(),
    )
    g = torch.Generator().manual_seed(seed + 1)
    batch = Batch(
        x=torch.rand(batch_size, 3, 16, 16, generator=g),
        y=torch.randint(0, num_classes, (batch_size,), generator=g),
        index=torch.arange(batch_size),
    )
    return method, student, teacher, extras, batch


def tiny_context(
    student: nn.Module,
    epoch: int,
    total_epochs: int,
    extras: dict[str, nn.Module],
    num_classes: int = 10,
    attack_fn: AttackFn | None = None,
    log: Callable[[str, Tensor | float], None] | None = None,
) -> StepContext:
    return StepContext(
        epoch=epoch,
        total_epochs=total_epochs,
        step=0,
        attack=TINY_ATTACK,
        attack_fn=attack_fn or make_attack_fn(student, TINY_ATTACK),
        features=logits_and_features,
        log=log or (lambda k, v: None),
        num_classes=num_classes,
        extras=extras,
    )


def check_registered(method_name: str) -> str:
    """A Method subclass with a docstring naming its paper, whose default Config builds."""
    cls = get_method(method_name)
    if not issubclass(cls, Method):
        raise TypeError("not a Method subclass")
    if not (cls.__doc__ or "").strip() and not (sys.modules[cls.__module__].__doc__ or "").strip():
        raise ValueError("a method's docstring must name its paper")
    cls.Config()
    return f"{cls.__module__}.{cls.__qualname__}"


def _checked_attack(student: nn.Module, calls: list[int]) -> AttackFn:
    """The tiny attack, asserting what attack_fn promises (detached, inside the eps-ball)."""
    inner = make_attack_fn(student, TINY_ATTACK)

    def attack_fn(x: Tensor, objective: Callable[[Tensor], Tensor]) -> Tensor:
        calls.append(1)
        x_adv = inner(x, objective)
        if x_adv.requires_grad:
            raise AssertionError("attack_fn must return a detached tensor")
        if (x_adv - x).abs().max() > 8 / 255 + 1e-6:
            raise AssertionError("x_adv left the eps-ball")
        return x_adv

    return attack_fn


def _assert_frozen(
    teacher: nn.Module, extras: dict[str, nn.Module], t_state: dict[str, Tensor]
) -> None:
    """No gradient reached a frozen network, and the teacher's state did not move."""
    frozen = list(teacher.named_parameters()) + [
        (f"{k}.{n}", p) for k, m in extras.items() for n, p in m.named_parameters()
    ]
    for name, p in frozen:
        if p.grad is not None:
            raise AssertionError(f"gradient reached frozen network parameter {name}")
    for key, value in teacher.state_dict().items():
        if not torch.equal(value, t_state[key]):
            raise AssertionError(f"teacher state {key} changed (weights or BN buffers)")


def check_one_step(method_name: str, epoch: int) -> str:
    """Finite 0-dim terms whose sum reaches the student (and the method's own parameters),
    a frozen teacher, the student left in train mode, the batch untouched."""
    method, student, teacher, extras, batch = tiny_setup(method_name)
    t_state = copy.deepcopy(teacher.state_dict())
    x_before = batch.x.clone()
    calls: list[int] = []
    attack_fn = _checked_attack(student, calls)
    ctx = tiny_context(student, epoch, TOTAL_EPOCHS, extras, attack_fn=attack_fn)
    terms = method.losses(student, teacher, batch, ctx)
    check_losses(terms, method_name)
    total = functools.reduce(operator.add, terms.values())
    total.backward()
    if not student.training:
        raise AssertionError("student left in eval mode after losses()")
    if teacher.training:
        raise AssertionError("teacher switched to train mode")
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    if not grads or all(float(g.abs().sum()) == 0 for g in grads):
        raise AssertionError("no gradient reached the student")
    _assert_frozen(teacher, extras, t_state)
    if not torch.equal(batch.x, x_before):
        raise AssertionError("losses() modified the batch in place")
    for name, p in method.named_parameters():
        if p.grad is None:
            raise AssertionError(f"method parameter {name} got no gradient")
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    return f"terms: {values}; attacks: {len(calls)}"


def check_no_host_reads(method_name: str) -> str:
    """losses() and the attack objective never read a tensor value on the host (no
    .item(), float(t), bool(t) or Python if on a tensor): on a GPU each read stalls the
    step, and the whole step is captured in one CUDA graph."""
    for epoch in (0, TOTAL_EPOCHS - 1):
        method, student, teacher, extras, batch = tiny_setup(method_name)
        ctx = tiny_context(student, epoch, TOTAL_EPOCHS, extras)
        with count_host_reads() as reads:
            method.losses(student, teacher, batch, ctx)
        if reads.count:
            raise AssertionError(
                f"{reads.count} host read(s) in losses() at epoch {epoch}: "
                f"{reads.describe()}; keep values on the device (ctx.log takes tensors)"
            )
    return "none at the first and the last epoch"


def check_deterministic(method_name: str) -> str:
    """Two runs from the same seed give the same terms."""
    vals = []
    for _ in range(2):
        method, student, teacher, extras, batch = tiny_setup(method_name)
        torch.manual_seed(123)
        ctx = tiny_context(student, 0, TOTAL_EPOCHS, extras)
        terms = method.losses(student, teacher, batch, ctx)
        vals.append({k: float(v.detach()) for k, v in terms.items()})
    if vals[0] != vals[1]:
        raise AssertionError(f"same seed, different losses: {vals[0]} vs {vals[1]}")
    return "same seed, same terms"


def check_capturable(method_name: str) -> str:
    """The step can be captured as one CUDA graph (simulated on the CPU by EagerReplay:
    replays reuse the capture's Python, as a graph does) and replays give the eager
    step's losses, across the first and the last epoch (capture_key)."""
    if not getattr(get_method(method_name), "supports_cuda_graph", True):
        return "opts out (supports_cuda_graph = False): the step runs eagerly on CUDA"
    epochs = [0] * 4 + [TOTAL_EPOCHS - 1] * 4
    runs = []
    for graph in (False, True):
        step, batch = _tiny_step(method_name, graph)
        torch.manual_seed(321)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = []
            for i, epoch in enumerate(epochs):
                b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index)
                terms = step(b, epoch=epoch, step=i)
                values.append({k: float(v) for k, v in terms.items()})
        runs.append((values, step))
    (eager, _), (replayed, step) = runs
    assert step.graph is not None
    if step.graph.off is not None:
        raise AssertionError(f"not capturable: {step.graph.off}")
    for i, (a, b_) in enumerate(zip(replayed, eager, strict=True)):
        if a.keys() != b_.keys() or any(abs(a[k] - b_[k]) > 1e-4 * (1 + abs(b_[k])) for k in b_):
            raise AssertionError(
                f"step {i} (epoch {epochs[i]}) replayed {a} but eager gives {b_}: "
                "losses() depends on the epoch; define capture_key(epoch)"
            )
    c = step.graph.counts
    return f"{c.captures} capture(s), {c.replays} replays equal to eager steps"


def run_contract_checks(method_name: str) -> list[CheckResult]:
    """Every check of the contract on ``method_name``; a failing check is reported, not raised."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("registered, default Config builds", lambda: check_registered(method_name))
    ]
    for epoch in (0, TOTAL_EPOCHS - 1):
        checks.append(
            (
                f"one step at epoch {epoch}: finite 0-dim terms, gradients, frozen teacher, modes",
                functools.partial(check_one_step, method_name, epoch),
            )
        )
    checks += [
        (
            "no host reads of tensor values in losses() or the attack objective",
            lambda: check_no_host_reads(method_name),
        ),
        ("deterministic under a fixed seed", lambda: check_deterministic(method_name)),
        (
            "capturable as one CUDA graph (simulated on the CPU)",
            lambda: check_capturable(method_name),
        ),
    ]
    results: list[CheckResult] = []
    for name, fn in checks:
        try:
            results.append(CheckResult(name, True, fn() or ""))
        except Exception as exc:  # a check reports, it does not crash the listing
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    return results


def _tiny_step(method_name: str, cuda_graph: bool) -> tuple[TrainStep, Batch]:
    """A real TrainStep on the tiny setup; with ``cuda_graph`` driven by EagerReplay."""
    from ..protocols import TrainConfig
    from .graph import EagerReplay
    from .speed import SpeedPlan, make_optimizer

    method, student, teacher, extras, batch = tiny_setup(method_name)
    plan = SpeedPlan(device="cpu", fused_optimizer=True, cuda_graph=cuda_graph)
    attack = TINY_ATTACK
    params = list(student.parameters()) + list(method.parameters())
    step = TrainStep(
        method=method,
        method_name=method_name,
        student=student,
        teacher=teacher,
        extras=extras,
        optimizer=make_optimizer(params, TrainConfig(), plan),
        attack_fn=make_attack_fn(student, attack),
        attack_cfg=attack,
        plan=plan,
        num_classes=10,
        total_epochs=200,
        graph_backend=EagerReplay(),
    )
    if step.graph is not None:
        step.graph.warmup_steps = 2
    return step, batch
