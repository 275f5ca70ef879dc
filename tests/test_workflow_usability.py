"""A newcomer's first hour (issue 27): the errors and fixes a new user met, as tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ardbench
from ardbench.cli import main
from ardbench.errors import ConfigError
from ardbench.protocols.eps_check import check_eps_plausible, implausible_eps

# ------------------------------------------------------------------ an implausible L∞ radius


@pytest.mark.parametrize(
    ("eps", "meant"),
    [
        ("0.5", "did you mean 0.5/255"),
        ("1", "pixel count: did you mean 1/255"),
        ("40/255", "8/255"),
        (0.2, "0.2/255"),
    ],
)
def test_an_implausible_linf_radius_says_what_was_meant(eps, meant):
    problem = implausible_eps("Linf", eps)
    assert problem is not None and meant in problem and "32/255" in problem
    with pytest.raises(ConfigError, match="--force"):
        check_eps_plausible("Linf", eps)
    check_eps_plausible("Linf", eps, force=True)  # forced: accepted


@pytest.mark.parametrize("eps", ["8/255", "16/255", "32/255", "0.031", 8 / 255])
def test_usual_radii_pass(eps):
    assert implausible_eps("Linf", eps) is None


def test_l2_radii_are_not_linf_ones():
    assert implausible_eps("L2", "0.5") is None  # the standard CIFAR L2 radius


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--preset", "demo", "--method", "rslad", "--set", "attack.eps=0.5", "--dry-run"],
        ["eval", "small_cnn", "--dataset", "digits", "--eps", "0.5"],
        ["sweep", "--methods", "rslad", "--recipe", "demo", "--set", "attack.eps=0.5", "--dry-run"],
    ],
)
def test_run_eval_and_sweep_refuse_eps_half_before_any_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "0.5/255" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written: no sweep/, no runs/


def test_force_runs_the_radius_as_given(capsys):
    argv = ["run", "--preset", "demo", "--method", "rslad", "--set", "attack.eps=0.5"]
    assert main([*argv, "--dry-run", "--force"]) == 0
    assert '"eps": "127.5/255"' in capsys.readouterr().out


def test_the_api_refuses_and_forces():
    with pytest.raises(ConfigError, match="force=True"):
        ardbench.config(method="rslad", preset="demo", sets=["attack.eps=0.5"])
    cfg = ardbench.config(method="rslad", preset="demo", sets=["attack.eps=0.5"], force=True)
    assert float(cfg.attack.eps) == 0.5
    with pytest.raises(ConfigError, match="eps"):
        ardbench.evaluate("small_cnn", dataset="digits", eps=0.5)


# ------------------------------------------------------------------ eval demo, without the trainer


@pytest.mark.parametrize("spec", ["demo", "demo_natural"])
def test_demo_specs_resolve_without_importing_the_trainer_first(spec, tmp_path):
    """``ardbench eval demo`` imports no trainer: the alias's module is imported on use."""
    from ardbench.train.demo import demo_teacher_config

    cached = tmp_path / "demo" / f"teacher-{demo_teacher_config(spec).config_hash()}"
    cached.mkdir(parents=True)
    (cached / "record.json").write_text("{}")  # a cached teacher: nothing is trained
    code = (
        "import sys\n"
        "from ardbench.models.loading import SPEC_ALIASES, resolve_alias\n"
        f"assert {spec!r} not in SPEC_ALIASES and 'ardbench.train' not in sys.modules\n"
        f"print(resolve_alias({spec!r}))\n"
    )
    env = {**os.environ, "ARDBENCH_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"run:{cached}"


# ------------------------------------------------------------------ ARDBENCH_CACHE


def test_ardbench_cache_moves_models_data_and_list_teachers(tmp_path, monkeypatch, capsys):
    from ardbench.data.datasets import default_data_dir
    from ardbench.models import default_model_dir

    monkeypatch.setenv("ARDBENCH_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("ARDBENCH_MODEL_DIR", raising=False)
    monkeypatch.delenv("ARDBENCH_DATA_DIR", raising=False)
    assert default_model_dir() == tmp_path / "c" / "robustbench"
    assert default_data_dir() == tmp_path / "c" / "data"
    ckpt = tmp_path / "c" / "robustbench" / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"0")
    assert main(["list", "teachers", "--runs", str(tmp_path / "runs")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "present at" in out and str(tmp_path / "c" / "robustbench") in out.replace(" ", "")


# ------------------------------------------------------------------ paths, from elsewhere


def test_recipe_paths_are_found_from_the_recipe_file(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "t.pt").write_bytes(b"")
    recipe = folder / "r.yaml"
    recipe.write_text("teacher: small_cnn:weights/t.pt\nstudent: small_cnn\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = ardbench.config(method="rslad", recipe=str(recipe), dataset="digits")
    assert cfg.teacher == f"small_cnn:{folder / 'weights' / 't.pt'}"
    monkeypatch.chdir(folder)  # where the path exists as written: kept as written
    cfg = ardbench.config(method="rslad", recipe=str(recipe), dataset="digits")
    assert cfg.teacher == "small_cnn:weights/t.pt"


def test_checkout_recipes_and_protocol_data_work_from_another_directory(tmp_path, monkeypatch):
    from ardbench.paths import baselines_dir

    checkout = baselines_dir().parent
    shared = checkout.parent / "shared" / "data"
    if not (shared / "models" / "resnet4b_cifar10_linf2.pt2").is_file():
        pytest.skip("../shared/data is not beside the checkout")
    monkeypatch.chdir(tmp_path)
    cfg = ardbench.config(method="rslad", recipe="cifar10_exact_linf2_resnet4b")
    assert cfg.teacher == str((shared / "models" / "resnet4b_cifar10_linf2.pt2").resolve())
    assert cfg.dataset.startswith(f"npz:{shared.resolve()}/cifar10/")
    monkeypatch.chdir(checkout)
    cfg_root = ardbench.config(method="rslad", recipe="cifar10_exact_linf2_resnet4b")
    assert cfg_root.teacher == "../shared/data/models/resnet4b_cifar10_linf2.pt2"  # as committed


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["leaderboard", "--check"], "--runs"), (["compare", "--method", "rslad"], "--records")],
)
def test_a_missing_records_folder_says_where_it_looked(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"looked in {tmp_path / 'leaderboard' / 'runs'}" in err and flag in err


# ------------------------------------------------------------------ a modified protocol

MODIFIED = "cifar10-exact-linf2-flip+5945a639"  # the committed 32-epoch budget runs


def _modified_record():
    from ardbench.paths import baselines_dir

    folder = baselines_dir().parent / "leaderboard" / "runs"
    found = sorted(folder.glob(f"{MODIFIED}_*/*/*.json"))
    if not found:
        pytest.skip("no committed record of a modified protocol")
    return found[0]


def test_compare_says_the_protocol_was_modified_what_changed_and_what_to_do(tmp_path, capsys):
    record = _modified_record()
    assert main(["compare", str(record), "--records", str(tmp_path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"followed a modified protocol, {MODIFIED}" in err
    assert "train.epochs = 32 (registered 8)" in err
    assert "rerun with the registered protocol cifar10-exact-linf2-flip" in err


def test_results_protocol_column_names_modified_protocols():
    record = _modified_record()
    df = ardbench.results(record.parent.parent.parent)
    assert MODIFIED in set(df["protocol"])
    assert set(df.loc[df["protocol"] == MODIFIED, "protocol_modified"]) == {True}
    plain = df.loc[df["protocol"] == "cifar10-exact-linf2-flip", "protocol_modified"]
    assert len(plain) and not plain.any()


# ------------------------------------------------------------------ small errors


def test_a_mistyped_recipe_gets_a_did_you_mean(capsys):
    assert main(["run", "--method", "rslad", "--recipe", "dmeo", "--dry-run"]) == 2
    assert "did you mean 'demo'?" in capsys.readouterr().err


def test_epochs_zero_says_how_to_fix_it(capsys):
    assert main(["run", "--method", "rslad", "--preset", "demo", "--epochs", "0", "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "train.epochs must be > 0" in err and "--epochs 1" in err


def test_doctor_is_a_command(capsys):
    assert main(["doctor", "--no-gpu-checks"]) == 0
    assert "ardbench doctor" in capsys.readouterr().out
