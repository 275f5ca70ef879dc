"""The Python API, used as a newcomer would: ``import ardbench`` and nothing else (the CLI only
where the API hands over to it: filing a later evaluation)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import ardbench

REPO = Path(__file__).resolve().parents[1]
# the digits demo, shrunk: one epoch on 128 images, 64 test points
TINY = {
    "epochs": 1,
    "train_subset": 128,
    "probe": 32,
    "eval": {"n_examples": 64, "attacks": ["clean", "pgd20"]},
    "attack": {"steps": 1},
}


def _python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_is_light_and_names_resolve_lazily():
    out = _python(
        "import sys, ardbench\n"
        "print('torch' in sys.modules, sorted(n for n in ardbench.__all__))\n"
        "print(callable(ardbench.evaluate), callable(ardbench.train), callable(ardbench.results))"
    )
    first, second = out.splitlines()
    assert first.startswith("False")  # `import ardbench` does not load torch
    assert second == "True True True"


@pytest.mark.parametrize(
    "code",
    [
        # the submodule first, then the API name: the package must still be callable
        "import ardbench.train.trainer, ardbench.results.tables\nimport ardbench\n"
        "assert callable(ardbench.train) and callable(ardbench.results)\n"
        "assert ardbench.train.trainer.train is ardbench.train.train\n"
        "assert callable(ardbench.results.tables.build_tables)",
        # the API name first, then a submodule imported later: still both
        "import ardbench\nf = ardbench.train\nimport ardbench.train.check\n"
        "import ardbench.results.compare\n"
        "assert ardbench.train is f and callable(ardbench.train)\n"
        "assert callable(ardbench.results) and ardbench.results.compare.compare_record",
    ],
)
def test_train_and_results_are_packages_and_functions_in_any_import_order(code):
    _python(code)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher-free PGD-AT run and an RSLAD run distilled from it, through the API."""
    root = tmp_path_factory.mktemp("api_runs")
    teacher = ardbench.train(
        method="pgd_at", preset="demo", seed=0, runs=root, progress=False, threads=1, **TINY
    )
    student = ardbench.train(
        method="rslad",
        preset="demo",
        teacher=f"run:{teacher.directory}",
        seed=1,
        runs=root,
        progress=False,
        threads=1,
        **TINY,
    )
    return root, teacher, student


def test_train_returns_a_finished_run(runs):
    root, teacher, student = runs
    assert isinstance(student, ardbench.Run)
    assert student.directory.parent == root and student.completed
    record = student.record
    assert record["method"]["name"] == "rslad" and record["seed"] == 1
    assert record["teacher"]["spec"] == f"run:{teacher.directory}"
    assert student.config.train.train_subset == 128  # the bare-key override reached the config
    assert set(student.metrics) == {"clean", "pgd20"}
    assert student == ardbench.Run(student.directory / "record.json")


def test_run_log_and_curves_hold_the_per_epoch_probe(runs):
    _, _, student = runs
    (row,) = student.log()
    assert row["epoch"] == 1 and row["probe"]["examples"] == 32
    assert set(row["losses"]) >= {"kl_adv", "kl_nat"}
    curves = student.curves()
    assert list(curves["epoch"]) == [1]
    assert {"loss.kl_adv", "loss.kl_nat", "probe.clean", "probe.pgd10", "lr"} <= set(curves)
    assert curves["probe.pgd10"][0] == row["probe"]["pgd10"]


def test_model_and_evaluate_reproduce_the_record(runs):
    """The evaluator draws its random starts per point from the seed: the same points, the
    same seed and the same weights give the record's numbers exactly."""
    _, _, student = runs
    model = student.model()
    assert not model.training and not any(m.training for m in model.modules())
    seed = student.config.train.seed
    res = ardbench.evaluate(
        model, dataset="digits", eps="8/255", attacks="clean,pgd20", n_examples=64, seed=seed
    )
    assert res.accuracy == student.metrics
    assert res.n_examples == 64 and res.data["spec"] == "digits"
    via_run = ardbench.evaluate(student, dataset="digits", attacks=["clean"], n_examples=64)
    assert via_run.accuracy["clean"] == student.metrics["clean"]
    assert via_run.model["sha256"] == student.record["checkpoint"]["sha256"]


def test_results_is_one_tidy_row_per_run(runs):
    root, teacher, student = runs
    df = ardbench.results(root)
    assert list(df["run_id"]) == sorted([teacher.run_id, student.run_id])
    row = df.set_index("method").loc["rslad"]
    assert row["seed"] == 1 and row["epochs"] == 1 and row["student"] == "small_cnn"
    # 1 epoch instead of demo's 12: a modified protocol, named as the leaderboard names it
    assert row["protocol"].startswith("demo+") and row["protocol_modified"]
    assert row["recipe"] == "preset:demo"
    assert row["teacher"] == f"run-{teacher.run_id}"
    assert row["clean"] == student.metrics["clean"] and row["pgd20"] == student.metrics["pgd20"]
    assert math.isnan(row["aa"]) and row["n_examples"] == 64
    assert df.set_index("method").loc[["pgd_at"], "teacher"].isna().all()  # no teacher
    # the same runs found twice (a directory and a run in it) count once
    assert len(ardbench.results(root, student, student.directory / "record.json")) == 2


def test_results_include_a_later_evaluation(runs, tmp_path):
    """A column evaluated later (``leaderboard --attach``) appears in the frame, named."""
    from ardbench.cli import main

    _, _, student = runs
    later = ardbench.evaluate(student, dataset="digits", attacks="clean,fgsm", n_examples=64)
    (tmp_path / "E.json").write_text(json.dumps(later.to_dict()))
    lb = tmp_path / "lb"
    argv = ["--runs", str(lb / "runs"), "--out", str(lb)]
    assert main(["leaderboard", "--add", str(student.directory), *argv]) == 0
    assert main(["leaderboard", "--attach", str(tmp_path / "E.json"), *argv]) == 0
    (row,) = ardbench.results(lb / "runs").to_dict("records")
    assert row["fgsm"] == later.accuracy["fgsm"] and row["later_columns"] == "fgsm"
    assert row["pgd20"] == student.metrics["pgd20"]  # the record's own numbers stay


def test_config_resolves_overrides_like_set():
    cfg = ardbench.config(
        method="trades",
        preset="demo",
        epochs=2,
        beta=3,
        train={"lr": 0.05},
        sets=["attack.steps=3"],
    )
    assert (cfg.train.epochs, cfg.train.lr, cfg.attack.steps) == (2, 0.05, 3)
    assert cfg.method_config["beta"] == 3.0


def test_bad_override_names_the_key(tmp_path):
    from ardbench.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'train_subset'"):
        ardbench.train(method="pgd_at", preset="demo", train_subst=5, runs=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_run_of_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an ardbench run directory"):
        ardbench.Run(tmp_path)
    with pytest.raises(FileNotFoundError):
        ardbench.results(tmp_path / "missing")
