from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ardbench.models import build_arch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep tests away from the user's cache, but share one demo-teacher cache per session."""
    cache = os.environ.get("ARDBENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("ARDBENCH_CACHE", cache)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the checkout")
    return SHARED_DATA


@pytest.fixture
def tiny_npz(tmp_path):
    """48 training images whose brightness encodes the class; the first 16 are the test set."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    y_train = rng.integers(0, 10, 48)
    x_train = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    # make the labels learnable: brightness encodes the class
    x_train = (x_train // 4 + (y_train[:, None, None, None] * 20)).astype(np.uint8)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_train[:16], y_test=y_train[:16])
    return path


@pytest.fixture
def teacher_file(tmp_path):
    """A randomly initialised small_cnn state dict (a teacher near chance)."""
    torch.manual_seed(1)
    path = tmp_path / "teacher.pt"
    torch.save(build_arch("small_cnn", 10).state_dict(), path)
    return path
