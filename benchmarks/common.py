"""Shared helpers of the benchmark scripts: FLOP counts, the device's matmul rate, timing.

Not part of the library and not a test: these scripts measure, they do not assert.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

# Forward GFLOP per 32x32 image (2 x conv+linear MACs, C = 10), ../shared/reference/methods.md §5.
REFERENCE_GFLOP = {
    "resnet18": 1.111,
    "preact_resnet18": 1.111,
    "mobilenetv2": 0.182,
    "wrn_16_2": 0.202,
    "wrn_28_10": 10.49,
    "wrn_34_10": 13.32,
}


def count_gflop(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> float:
    """Forward GFLOP per image: 2 x multiply-accumulates of every Conv2d and Linear call."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += 2 * out.numel() * k

    def linear_hook(m: nn.Linear, inp, out) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(input_shape, device=p.device, dtype=p.dtype))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return total / input_shape[0] / 1e9


def gflop_of(arch: str, model: nn.Module) -> tuple[float, str]:
    """(GFLOP per image, source): the reference's figure when it has one, else counted."""
    counted = count_gflop(model)
    if arch in REFERENCE_GFLOP:
        return REFERENCE_GFLOP[arch], f"reference §5 (counted here: {counted:.3f})"
    return counted, "counted (2 x conv/linear MACs)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype = torch.float32, tf32: bool = False):
    """Measured dense matmul rate (TFLOP/s) of an n x n product, the best of a few runs."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        for _ in range(2):
            a @ b
        sync(device)
        best = float("inf")
        reps = 10 if device.type == "cuda" else 3
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return 2 * n**3 / best / 1e12


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call, synchronised on CUDA before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median_ms(times_s: list[float]) -> float:
    return 1000 * statistics.median(times_s)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU {name} ({torch.get_num_threads()} torch thread(s))"
