from __future__ import annotations

import json

import numpy as np
import pytest

from ardbench.cli import main


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 40)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    return path


def test_list_methods(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("natural", "kd", "pgd_at", "trades"):
        assert name in out


@pytest.mark.parametrize("what", ["models", "datasets", "recipes"])
def test_list_other(what, capsys):
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert {"models": "resnet18", "datasets": "digits", "recipes": "demo"}[what] in out


def test_unknown_method_suggests(capsys):
    assert main(["run", "--method", "trade", "--dry-run"]) == 2
    assert "did you mean 'trades'" in capsys.readouterr().err.lower()


def test_dry_run_prints_resolved_config(capsys):
    assert (
        main(
            [
                "run",
                "--method",
                "trades",
                "--preset",
                "demo",
                "--epochs",
                "2",
                "--set",
                "beta=3",
                "--dry-run",
            ]
        )
        == 0
    )
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["epochs"] == 2 and cfg["method_config"]["beta"] == 3.0
    assert cfg["dataset"] == "digits"


def test_bad_set_key_exits_2(capsys):
    assert main(["run", "--method", "trades", "--set", "train.epoch=2", "--dry-run"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err.lower()


def test_run_end_to_end_in_process(tiny_npz, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = main(
        [
            "run",
            "--method",
            "pgd_at",
            "--dataset",
            f"npz:{tiny_npz}",
            "--student",
            "small_cnn",
            "--epochs",
            "1",
            "--set",
            "train.batch_size=20",
            "--set",
            "attack.steps=1",
            "--set",
            "eval.attacks=clean,pgd20",
            "--runs",
            str(runs),
            "--quiet",
        ]
    )
    assert rc == 0
    (run_dir,) = runs.iterdir()
    assert (run_dir / "record.json").is_file()
    assert "PGD-20" in capsys.readouterr().out


def test_check_command(capsys):
    assert main(["check", "--method", "trades"]) == 0
    assert "all" in capsys.readouterr().out


def test_demo_preset_trains_and_caches_its_teacher(tmp_path, monkeypatch, capsys):
    """The README's main job, shrunk: a fresh cache trains the demo teacher, then distils."""
    import ardbench.train.demo as demo

    monkeypatch.setenv("ARDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        demo, "TEACHER_OVERRIDES", {"train": {"epochs": 1, "milestones": [1], "train_subset": 128}}
    )
    argv = [
        "run",
        "--method",
        "rslad",
        "--preset",
        "demo",
        "--epochs",
        "1",
        "--set",
        "train.train_subset=128",
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "teacher (pgd_at, small_cnn)" in out and "student (rslad, small_cnn)" in out
    cached = list((tmp_path / "cache" / "demo").iterdir())
    assert [p.name.startswith("teacher-") for p in cached] == [True]
    assert (cached[0] / "record.json").is_file()
    assert main(argv) == 0  # second run reuses the cached teacher
    assert len(list((tmp_path / "cache" / "demo").iterdir())) == 1
