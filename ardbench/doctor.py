"""``ardbench doctor``: what this machine has, as a report a user can attach to an issue.

Versions (Python, ardbench, torch with its CUDA and cuDNN, numpy, pyautoattack, robustbench),
devices, torch's threads, the cache, data and model folders and what is cached in them (the
demo teachers, RobustBench checkpoints, datasets), then, on CUDA, the device checks of
:mod:`ardbench.doctor_gpu`; without CUDA they are skipped and the report says why. Nothing
here downloads, trains or writes outside ``--json``; on a CPU it takes seconds.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

__all__ = ["build_report", "gpu_skip_reason"]

# distributions whose versions matter for a bug report (name as pip knows it)
PACKAGES = ("torch", "torchvision", "numpy", "pyautoattack", "autoattack", "robustbench")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    from . import __version__

    found: dict[str, Any] = {"python": platform.python_version(), "ardbench": __version__}
    for dist in PACKAGES:
        found[dist] = _version(dist)
    found["torch_cuda"] = torch.version.cuda
    found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return found


def devices() -> dict[str, Any]:
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append(
                {
                    "index": i,
                    "name": p.name,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}",
                }
            )
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "cuda": cuda,
    }


def threads() -> dict[str, Any]:
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }


def _listing(root: Path, pattern: str, limit: int = 20) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.glob(pattern))[:limit]


def folders() -> dict[str, Any]:
    """Where ardbench looks (and the variables that move it), and what is there."""
    from .data.datasets import default_data_dir
    from .models import default_model_dir
    from .paths import baselines_dir, cache_dir

    cache, data, models = cache_dir(), default_data_dir(), default_model_dir()
    demo = cache / "demo"
    return {
        "cache": {"path": str(cache), "env": "ARDBENCH_CACHE", "exists": cache.is_dir()},
        "data": {"path": str(data), "env": "ARDBENCH_DATA_DIR", "exists": data.is_dir()},
        "models": {"path": str(models), "env": "ARDBENCH_MODEL_DIR", "exists": models.is_dir()},
        "baselines": str(baselines_dir()) if baselines_dir() else None,
        "cached": {
            "demo_teachers": [p for p in _listing(demo, "teacher-*") if "-pid" not in p],
            "robustbench": _listing(models, "*/*/*.pt"),
            "datasets": _listing(data, "*"),
        },
    }


def gpu_skip_reason(device: str | None = None) -> str | None:
    """Why the device checks cannot run here (None: they can)."""
    if device is not None and not device.startswith("cuda"):
        return f"--device {device} is not a CUDA device"
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return "torch.cuda.is_available() is False (no GPU visible, or a driver problem)"


def build_report(
    *,
    gpu: bool = True,
    device: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The report; the device checks run when ``gpu`` and a CUDA device is there."""
    report: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["ardbench", *sys.argv[1:]]),
        "versions": versions(),
        "devices": devices(),
        "threads": threads(),
        "folders": folders(),
    }
    reason = gpu_skip_reason(device) if gpu else "--no-gpu-checks"
    if reason is not None:
        report["gpu_checks"] = {"skipped": reason}
        return report
    from .doctor_gpu import run_gpu_checks

    checks = run_gpu_checks(torch.device(device or "cuda"), log=log)
    report["gpu_checks"] = {"skipped": None, "passed": all(c["passed"] for c in checks)}
    report["gpu_checks"]["results"] = checks
    return report
