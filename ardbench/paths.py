"""Where ardbench looks for things on disk (all overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """ARDBENCH_CACHE, else ~/.cache/ardbench (demo teacher, robustbench models, datasets)."""
    return Path(os.environ.get("ARDBENCH_CACHE", Path.home() / ".cache" / "ardbench"))


def baselines_dir() -> Path:
    """ARDBENCH_BASELINES, else the checkout's baselines/ (beside the package), else ./baselines."""
    env = os.environ.get("ARDBENCH_BASELINES")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1] / "baselines"
    return beside if beside.is_dir() else Path.cwd() / "baselines"
