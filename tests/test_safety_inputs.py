"""Where code and settings may come from, what a rejected start leaves, what Ctrl-C says, and
what is cleaned after a kill.

- contributed methods and recipes come from the checkout, ARDBENCH_BASELINES or entry points,
  never from the working directory; an installed package keeps its built-in presets;
- a run rejected at start (each class of rejection) leaves no directory;
- the Ctrl-C message says what can be resumed (run: per-epoch checkpoints; eval: --state-dir);
- a later start removes the ``*.tmp`` files a killed writer left (runs, leaderboard folders,
  eval state directories and outputs), and only those.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import ardbench.paths as paths
from ardbench.cli import main
from ardbench.errors import ArdbenchError
from ardbench.models import build_arch

FAST = ["attack.steps=1", "train.batch_size=20", "eval.attacks=clean", "eval.n_examples=2"]


def _npz(path: Path, *, train: bool = True, channels: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 32, 32, channels), dtype=np.uint8)
    y = rng.integers(0, 10, 40)
    arrays = {"x_test": x[:8], "y_test": y[:8]}
    if train:
        arrays |= {"x_train": x, "y_train": y}
    np.savez(path, **arrays)
    return path


def _stale(folder: Path, name: str) -> Path:
    """A temporary file as atomic_write_bytes makes it, left behind by a kill an hour ago
    (no lock held: its writer is gone)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    import os
    import time

    os.close(fd)
    os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    return Path(tmp)


# ------------------------------------------------------------------ where code comes from


def test_working_directory_baselines_are_never_imported(tmp_path, monkeypatch, capsys) -> None:
    marker = tmp_path / "MARKER"
    contrib = tmp_path / "baselines" / "contrib" / "evil"
    contrib.mkdir(parents=True)
    (contrib / "method.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "baselines" / "common").mkdir()
    (tmp_path / "baselines" / "common" / "evil.yaml").write_text("student: small_cnn\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARDBENCH_BASELINES", raising=False)
    from ardbench.methods.contrib import discover_contrib, load_contrib_methods
    from ardbench.recipes import list_recipes

    assert paths.baselines_dir() != tmp_path / "baselines"
    assert all(tmp_path not in p.parents for p in discover_contrib())
    load_contrib_methods()
    assert all(name != "evil" for _, name, _ in list_recipes())
    assert main(["list", "methods"]) == 0 and main(["list", "recipes"]) == 0
    assert "evil" not in capsys.readouterr().out
    assert not marker.exists()


def test_installed_package_keeps_its_presets(tmp_path, monkeypatch) -> None:
    """Installed (no checkout around the package): no baselines folder, the presets work."""
    site = tmp_path / "site-packages"
    (site / "baselines").mkdir(parents=True)  # someone else's folder, not a checkout
    monkeypatch.setattr(paths, "__file__", str(site / "ardbench" / "paths.py"))
    monkeypatch.delenv("ARDBENCH_BASELINES", raising=False)
    from ardbench.methods.contrib import discover_contrib
    from ardbench.recipes import PRESETS, list_recipes, resolve_config

    assert paths.baselines_dir() is None
    assert discover_contrib() == []
    assert [name for _, name, path in list_recipes()] == list(PRESETS)
    assert resolve_config("pgd_at", preset="demo").student == "small_cnn"
    with pytest.raises(ArdbenchError, match="no recipe 'faithful_cifar10_resnet18'"):
        resolve_config("pgd_at", recipe="faithful_cifar10_resnet18")
    monkeypatch.setenv("ARDBENCH_BASELINES", str(Path(__file__).parents[1] / "baselines"))
    assert resolve_config("pgd_at", recipe="faithful_cifar10_resnet18").method == "pgd_at"


# ------------------------------------------------------- a rejected start leaves nothing


def _rejections(tmp: Path) -> dict[str, tuple[dict, list[str], str]]:
    data = f"npz:{_npz(tmp / 'd.npz')}"
    narrow = tmp / "narrow.pt"
    torch.save(build_arch("small_cnn", num_classes=5).state_dict(), narrow)
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    cases = {
        "dataset-missing": ({"dataset": f"npz:{tmp / 'nowhere.npz'}"}, [], "nowhere.npz"),
        "no-train-split": ({"dataset": f"npz:{_npz(tmp / 't.npz', train=False)}"}, [], "x_train"),
        "holdout-too-big": ({}, ["train.holdout=40"], "holdout=40"),
        "best-without-holdout": ({}, ["checkpoint.rule=best-on-holdout"], "train.holdout"),
        "swa-too-late": ({}, ["checkpoint.rule=swa", "checkpoint.swa_start=5"], "swa_start=5"),
        "teacher-missing": ({"method": "kd"}, [], "--teacher"),
        "teacher-corrupt": ({"method": "kd", "teacher": f"small_cnn:{garbage}"}, [], "garbage"),
        "teacher-too-narrow": ({"method": "kd", "teacher": f"small_cnn:{narrow}"}, [], "narrow"),
        "student-does-not-fit": (
            {"dataset": f"npz:{_npz(tmp / 'gray.npz', channels=1)}"},
            [],
            "does not run",
        ),
        "device-unknown": ({"device": "tpu"}, [], "tpu"),
        "eval-beyond-test-set": ({}, ["eval.n_examples=9"], "has 8 test points"),
    }
    if not torch.cuda.is_available():
        cases["device-missing"] = ({"device": "cuda"}, [], "no CUDA GPU")
    for cli, _, _ in cases.values():
        cli.setdefault("dataset", data)
    return cases


REJECTIONS = [
    "best-without-holdout",
    "dataset-missing",
    "device-missing",
    "eval-beyond-test-set",
    "device-unknown",
    "holdout-too-big",
    "no-train-split",
    "student-does-not-fit",
    "swa-too-late",
    "teacher-corrupt",
    "teacher-missing",
    "teacher-too-narrow",
]


@pytest.mark.parametrize("name", REJECTIONS)
def test_run_rejected_at_start_leaves_no_directory(name, tmp_path) -> None:
    from ardbench.recipes import resolve_config
    from ardbench.train import train

    cases = _rejections(tmp_path)
    if name not in cases:
        pytest.skip("this machine has a GPU")
    cli, sets, match = cases[name]
    method = cli.pop("method", "pgd_at")
    cli = {"student": "small_cnn", "device": "cpu", **cli, "train": {"epochs": 1}}
    runs = tmp_path / "runs"
    with pytest.raises((ArdbenchError, OSError), match=match):
        train(resolve_config(method, cli=cli, sets=[*FAST, *sets]), runs_dir=runs, progress=False)
    assert not runs.exists() or not any(runs.iterdir())


# -------------------------------------------------------------------------- Ctrl-C


def _run_argv(tmp: Path) -> list[str]:
    argv = ["run", "--method", "pgd_at", "--dataset", f"npz:{_npz(tmp / 'd.npz')}"]
    argv += ["--student", "small_cnn", "--epochs", "2", "--device", "cpu", "--quiet"]
    return [*argv, "--runs", str(tmp / "runs"), *[a for s in FAST for a in ("--set", s)]]


@pytest.mark.parametrize("stop_in_epoch", [0, 1])
def test_ctrl_c_in_a_run_says_what_can_be_resumed(stop_in_epoch, tmp_path, monkeypatch, capsys):
    import ardbench.train.trainer as trainer

    real = trainer.run_epoch

    def interrupted(loop, epoch, reporter):
        if epoch == stop_in_epoch:
            raise KeyboardInterrupt
        return real(loop, epoch, reporter)

    monkeypatch.setattr(trainer, "run_epoch", interrupted)
    assert main(_run_argv(tmp_path)) == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    err = " ".join(capsys.readouterr().err.split())
    if stop_in_epoch == 0:
        assert not (run_dir / "checkpoint.pt").exists()
        assert (
            f"no epoch had finished, so nothing is checkpointed; ardbench run --resume {run_dir} "
            "starts it over" in err
        )
    else:
        assert (run_dir / "checkpoint.pt").is_file()
        assert (
            f"the finished epochs are checkpointed; continue with ardbench run --resume {run_dir}"
            in err
        )
        monkeypatch.setattr(trainer, "run_epoch", real)
        assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0  # and it does continue
        assert (run_dir / "record.json").is_file()


def test_ctrl_c_before_a_run_starts(tmp_path, monkeypatch, capsys) -> None:
    import ardbench.train.trainer as trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "prepare", interrupted)
    assert main(_run_argv(tmp_path)) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("state_dir", [False, True])
def test_ctrl_c_in_an_eval_says_what_can_be_resumed(state_dir, tmp_path, monkeypatch, capsys):
    import ardbench.eval as evaluator

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluator, "evaluate_spec", interrupted)  # what `ardbench eval` calls
    argv = ["eval", "small_cnn", "--dataset", f"npz:{_npz(tmp_path / 'd.npz')}", "--quiet"]
    if state_dir:
        argv += ["--state-dir", str(tmp_path / "st")]
    assert main([*argv, "--device", "cpu"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    if state_dir:
        assert f"the finished chunks are saved in {tmp_path / 'st'}; rerun the same command" in err
    else:
        assert "nothing was saved: without --state-dir an evaluation cannot be resumed" in err


# ------------------------------------------------------------------------- leftovers


def test_leaderboard_start_removes_stale_temporary_files(tmp_path) -> None:
    out, runs = tmp_path / "lb", tmp_path / "lb" / "runs"
    runs.mkdir(parents=True)
    stale = [_stale(out, "README.md"), _stale(out / "some-track", "table.md"), _stale(runs, "r")]
    keep = out / ".notes.tmp"  # not a name atomic_write_bytes makes
    keep.write_text("mine")
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    assert not any(p.exists() for p in stale) and keep.exists()


def test_check_mode_writes_nothing(tmp_path) -> None:
    out = tmp_path / "lb"
    (out / "runs").mkdir(parents=True)
    stale = _stale(out, "README.md")
    main(["leaderboard", "--runs", str(out / "runs"), "--out", str(out), "--check"])
    assert stale.exists()


def test_eval_start_removes_stale_temporary_files(tmp_path) -> None:
    data = _npz(tmp_path / "d.npz")
    state = tmp_path / "st"
    stale = [_stale(state, "eval-0123456789abcdef.json"), _stale(tmp_path / "out", "e.json")]
    other = _stale(tmp_path / "out", "someone-else.json")  # not this command's output
    argv = ["eval", "small_cnn", "--dataset", f"npz:{data}", "--n-examples", "2", "--quiet"]
    argv += ["--attacks", "clean", "--device", "cpu", "--state-dir", str(state)]
    assert main([*argv, "--json", str(tmp_path / "out" / "e.json")]) == 0
    assert not any(p.exists() for p in stale)
    assert list(tmp_path.rglob("*.tmp")) == [other]


def test_resume_removes_stale_temporary_files_of_the_run(tmp_path, monkeypatch) -> None:
    import ardbench.train.trainer as trainer

    real = trainer.run_epoch

    def interrupted(loop, epoch, reporter):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(loop, epoch, reporter)

    monkeypatch.setattr(trainer, "run_epoch", interrupted)
    assert main(_run_argv(tmp_path)) == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    stale = _stale(run_dir, "checkpoint.pt")
    monkeypatch.setattr(trainer, "run_epoch", real)
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert not stale.exists() and not list(run_dir.rglob("*.tmp"))
