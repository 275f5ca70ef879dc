"""``ardbench doctor``'s device checks: the captured step against eager, the evaluator's
compliance checks, and images/s eager vs captured (issue 27).

Each check builds its own small job on ``device`` and returns a JSON-ready dict with
``passed``. On CUDA the captured step uses the real backend (warm-up on a side stream,
``torch.cuda.graph``, replays) with its self-check on; ``backend`` replaces it (the CPU tests
pass :class:`~ardbench.train.graph.EagerReplay`, which checks this code, not CUDA).

Tolerances are those of ``tests/test_train_cuda.py``: cuDNN convolutions run in TF32 on CUDA and
the two sides may take different (autotuned, nondeterministic) kernels, so loss terms agree
to rtol 1e-2 and each step's weight change to a relative norm error of 0.15, not bitwise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch

from .methods import Batch, build_method
from .protocols import AttackConfig, Eps, TrainConfig

__all__ = ["SHAPES", "captured_vs_eager", "compliance", "images_per_second", "run_gpu_checks"]

LOSS_RTOL, UPDATE_REL = 1e-2, 0.15
# (label, method, student arch, teacher arch, batch size, attack steps)
SHAPES = {
    "small": (
        "small model (rslad, small_cnn <- small_cnn)",
        "rslad",
        "small_cnn",
        "small_cnn",
        32,
        2,
    ),
    "rslad": ("RSLAD ResNet-18 <- WRN-34-10, batch 128", "rslad", "resnet18", "wrn_34_10", 128, 10),
}


def _job(
    shape: str, device: torch.device, cuda_graph: bool, backend: Any, warmup: int | None
) -> tuple[Any, Batch]:
    """A fresh TrainStep for ``shape`` (same seed: the same weights and batch every time)."""
    from .models import build_arch
    from .train.speed import make_optimizer, prepare_models, resolve_speed
    from .train.step import TrainStep, freeze, make_attack_fn

    _, method_name, s_arch, t_arch, batch_size, steps = SHAPES[shape]
    torch.manual_seed(0)
    student = build_arch(s_arch).to(device).train()
    teacher = freeze(build_arch(t_arch).to(device))
    method = build_method(method_name).to(device)
    tc = TrainConfig(compile=False, cuda_graph=cuda_graph, fused_optimizer=True)
    plan = resolve_speed(tc, device, method)
    if device.type != "cuda":  # resolve_speed turns capture off on the CPU: a stand-in runs
        plan = dataclasses.replace(plan, cuda_graph=cuda_graph, notes=[])
    prepare_models(plan, student, teacher)
    attack = AttackConfig(eps=Eps(8, 255), step=Eps(2, 255), steps=steps)
    step = TrainStep(
        method=method,
        method_name=method_name,
        student=student,
        teacher=teacher,
        extras={},
        optimizer=make_optimizer(list(student.parameters()), tc, plan),
        attack_fn=make_attack_fn(student, attack),
        attack_cfg=attack,
        plan=plan,
        num_classes=10,
        total_epochs=200,
        graph_backend=backend,
    )
    if step.graph is not None:
        step.graph.self_check = True
        if warmup is not None:
            step.graph.warmup_steps = warmup
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(device)
    return step, Batch(x=x, y=y, index=torch.arange(batch_size, device=device))


def _steps(step: Any, batch: Batch, n: int, half_at: int) -> list[dict[str, float]]:
    """``n`` steps (the one at ``half_at`` on half a batch: an epoch's last), across an epoch
    boundary and an lr change; the loss terms of each (read after each step)."""
    from .train.speed import set_lr

    torch.manual_seed(1234)
    out = []
    for i in range(n):
        epoch = 0 if i <= half_at else 1
        if i == half_at + 1:
            set_lr(step.optimizer, 0.02)  # a replay after an lr change must see it
        b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index)
        if i == half_at:
            k = len(b.y) // 2
            b = Batch(x=b.x[:k], y=b.y[:k], index=b.index[:k])
        terms = step(b, epoch=epoch, step=i)
        out.append({k: float(v) for k, v in terms.items()})
    return out


def captured_vs_eager(
    device: torch.device | str, shape: str = "small", backend: Any = None, warmup: int | None = None
) -> dict[str, Any]:
    """The same steps eagerly and captured, from the same weights, batch and seed."""
    device = torch.device(device)
    n, half_at = 8, 5
    results = {}
    for mode in ("eager", "captured"):
        step, batch = _job(shape, device, mode == "captured", backend, warmup)
        before = {k: p.detach().clone() for k, p in step.student.named_parameters()}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        losses = _steps(step, batch, n, half_at)
        change = {k: p.detach() - before[k] for k, p in step.student.named_parameters()}
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        results[mode] = (losses, change, step, peak)
    (le, ce, _, pe), (lc, cc, sc, pc) = results["eager"], results["captured"]
    worst_loss = max(
        abs(c[k] - e[k]) / max(abs(e[k]), 1e-8) for e, c in zip(le, lc, strict=True) for k in e
    )
    worst_update = max(float((cc[k] - ce[k]).norm() / ce[k].norm().clamp_min(1e-12)) for k in ce)
    g = sc.graph
    counts = dataclasses.asdict(g.counts) if g is not None else {}
    counts.pop("keys", None)
    off = g.off if g is not None else "not captured"
    return {
        "check": SHAPES[shape][0],
        "passed": off is None and worst_loss <= LOSS_RTOL and worst_update <= UPDATE_REL,
        "graph_off": off,
        "max_rel_loss_diff": worst_loss,
        "max_rel_update_diff": worst_update,
        "tolerance": {"loss_rtol": LOSS_RTOL, "update_rel_norm": UPDATE_REL},
        "counts": counts,
        "notes": list(sc.plan.notes),
        "peak_memory_mib": {"eager": _mib(pe), "captured": _mib(pc)},
    }


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def compliance(device: torch.device | str) -> dict[str, Any]:
    """The evaluator's compliance checks on a ResNet-18 on ``device``."""
    from .eval.compliance import run_compliance_checks
    from .models import build_arch

    device = torch.device(device)
    torch.manual_seed(0)
    model = build_arch("resnet18").to(device).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(32, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (32,), generator=g).to(device)
    results = run_compliance_checks(model, x, y)
    return {
        "check": "the evaluator's compliance checks (ResNet-18)",
        "passed": all(r.passed for r in results),
        "results": {r.name: {"passed": r.passed, "message": r.message} for r in results},
    }


def images_per_second(
    device: torch.device | str,
    shape: str = "rslad",
    timed: int = 10,
    backend: Any = None,
    warmup: int | None = None,
) -> dict[str, Any]:
    """Training images/s of ``timed`` steps, eager and captured, after warm-up and capture."""
    device = torch.device(device)
    rates = {}
    for mode in ("eager", "captured"):
        step, batch = _job(shape, device, mode == "captured", backend, warmup)
        start_steps = (step.graph.warmup_steps + 1) if step.graph is not None else 2
        for i in range(start_steps):
            step(batch, epoch=0, step=i)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(timed):
            step(batch, epoch=0, step=start_steps + i)
        _sync(device)
        rates[mode] = timed * len(batch.y) / (time.perf_counter() - t0)
    return {
        "check": f"images/s, {SHAPES[shape][0]}",
        "passed": True,
        "images_per_s": {k: round(v, 1) for k, v in rates.items()},
        "speedup": round(rates["captured"] / rates["eager"], 3),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_gpu_checks(
    device: torch.device | str, log: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """Every device check; one that raises is a failed check with its error."""
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("captured vs eager, small", lambda: captured_vs_eager(device, "small")),
        ("captured vs eager, RSLAD shapes", lambda: captured_vs_eager(device, "rslad")),
        ("compliance", lambda: compliance(device)),
        ("images/s", lambda: images_per_second(device, "rslad")),
    ]
    out = []
    for name, job in jobs:
        log(f"running: {name}")
        t0 = time.perf_counter()
        try:
            result = job()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a finding
            result = {"check": name, "passed": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        out.append(result)
    return out
