"""Where ardbench looks for things on disk (all overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """ARDBENCH_CACHE, else ~/.cache/ardbench (demo teacher, robustbench models, datasets)."""
    return Path(os.environ.get("ARDBENCH_CACHE", Path.home() / ".cache" / "ardbench"))


def baselines_dir() -> Path | None:
    """ARDBENCH_BASELINES, else the baselines/ of the checkout this package runs from, else None.

    Never the working directory: recipes and contributed ``method.py`` files are code and
    settings chosen by whoever wrote them, so ``ardbench list`` in a downloaded folder must not
    pick up (and import) that folder's ``baselines/``. An installed package has only its
    built-in presets, unless ARDBENCH_BASELINES names a folder.
    """
    env = os.environ.get("ARDBENCH_BASELINES")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    beside = checkout / "baselines"
    return beside if beside.is_dir() and (checkout / "pyproject.toml").is_file() else None
