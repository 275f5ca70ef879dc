"""Run records: one immutable JSON document per finished run (schema versioned).

The full schema, validation and the leaderboard come with the registry issue; this module
already writes everything a record must carry so that early runs stay usable.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

SCHEMA_VERSION = 1


def code_version() -> dict[str, Any]:
    """git sha + dirty flag of the checkout the package runs from, else the installed version."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"git_sha": sha, "dirty": dirty, "version": _version("ardbench")}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "dirty": None, "version": _version("ardbench")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{d: _version(d) for d in ("torchvision", "numpy", "pyautoattack", "robustbench")},
    }


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def build_record(
    *,
    cfg,
    run_id: str,
    dataset,
    teacher,
    student,
    eval_block: dict[str, Any],
    wall_time_s: float,
    device: torch.device,
    checkpoint: dict[str, Any],
) -> dict[str, Any]:
    from .methods import get_method

    cls = get_method(cfg.method)
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "track": {
            "dataset": cfg.dataset,
            "norm": cfg.attack.norm,
            "eps": eps,
            "data_fingerprint": dataset.fingerprint,
            "num_classes": dataset.num_classes,
        },
        "teacher": None
        if teacher is None
        else {"spec": cfg.teacher, "resolved": teacher.spec, "sha256": teacher.sha256},
        "student": {"spec": cfg.student, "arch": student.arch},
        "method": {
            "name": cfg.method,
            "config": cfg.method_config,
            "config_hash": cfg.config_hash(),
            "unofficial": bool(getattr(cls, "unofficial", False)),
            "teacher_in_attack": bool(getattr(cls, "teacher_in_attack", False)),
        },
        "recipe": cfg.recipe,
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "wall_time_s": round(wall_time_s, 3),
        "code_version": code_version(),
        "hardware": hardware(device),
        "versions": library_versions(),
        "eval": eval_block,
        "checkpoint": checkpoint,
        "paper": cfg.paper,
    }
