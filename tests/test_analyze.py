"""``ardbench analyze variance-gap``: the statistics on constructed features (exact values),
and the whole analysis on demo runs."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

import ardbench
from ardbench.analyze import feature_variance, fit_line, per_class_variance
from ardbench.cli import main

TINY = {
    "epochs": 1,
    "train_subset": 128,
    "probe": 16,
    "eval": {"n_examples": 64},
    "attack": {"steps": 1},
    "progress": False,
    "threads": 1,
}


def test_feature_variance_is_the_mean_per_dimension_sample_variance():
    # dims: {0, 2} -> var 2; {0, 4} -> var 8 (ddof = 1); mean 5
    assert feature_variance([[0.0, 0.0], [2.0, 4.0]]) == 5.0
    # three points, one dimension: {1, 1, 4}, mean 2 -> (1 + 1 + 4) / 2 = 3
    assert feature_variance(torch.tensor([[1.0], [1.0], [4.0]])) == 3.0
    assert math.isnan(feature_variance([[1.0, 2.0, 3.0]]))  # one point: undefined
    f = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert feature_variance(f) == pytest.approx(float(f.var(dim=0, unbiased=True).mean()))
    with pytest.raises(ValueError, match="points, dimensions"):
        feature_variance([1.0, 2.0])


def test_per_class_variance_uses_the_points_of_each_true_class():
    feats = [[0.0], [2.0], [1.0], [1.0], [4.0]]
    labels = [0, 0, 1, 1, 1]
    v0, v1, v2 = per_class_variance(feats, labels, 3)
    assert (v0, v1) == (2.0, 3.0) and math.isnan(v2)  # class 2 has no points


def test_fit_line_slope_intercept_and_pearson_r():
    fit = fit_line([0, 1, 2, 3], [1, 3, 5, 7])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1)
    assert fit["pearson_r"] == pytest.approx(1) and fit["n"] == 4
    assert fit_line([0, 1, 2], [3, 2, 1])["pearson_r"] == pytest.approx(-1)
    x, y = [0.1, 0.4, 0.2, 0.9, 0.5], [10.0, 7.0, 9.5, 1.0, 6.0]
    assert fit_line(x, y)["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(fit_line([1, 1, 1], [1, 2, 3])["slope"])  # no spread in x
    assert math.isnan(fit_line([1, 2, 3], [5, 5, 5])["pearson_r"])  # no spread in y
    assert fit_line([1, math.nan, 3], [1, 2, 3])["n"] == 2


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """A PGD-AT teacher; RSLAD, ARD and KD students of it; a second PGD-AT run (a baseline)."""
    root = tmp_path_factory.mktemp("vg_runs")
    teacher = ardbench.train(method="pgd_at", preset="demo", seed=0, runs=root, **TINY)
    spec = f"run:{teacher.directory}"
    students = [
        ardbench.train(method=m, preset="demo", teacher=spec, seed=0, runs=root, **TINY)
        for m in ("rslad", "ard", "kd")
    ]
    baseline = ardbench.train(method="pgd_at", preset="demo", seed=1, runs=root, **TINY)
    return root, teacher, students, baseline


def test_variance_gap_on_demo_runs(demo_runs, tmp_path, capsys):
    from ardbench.models import logits_and_features

    root, teacher, students, baseline = demo_runs
    out = tmp_path / "vg"
    assert (
        main(["analyze", "variance-gap", *(str(s.directory) for s in students), "--out", str(out)])
        == 0
    )
    table = pd.read_csv(out / "variance_gap.csv").set_index("run_id")
    # the distillation runs, and both teacher-free runs found beside them
    assert set(table.index) == {r.run_id for r in [*students, teacher, baseline]}
    for s in students:
        row = table.loc[s.run_id]
        # the evaluator's PGD-20 points against the student: the record's number exactly
        assert row["robust_acc"] == s.metrics["pgd20"] == row["pgd20_record"]
        assert row["clean_acc"] == s.metrics["clean"] and row["n"] == 64
        assert not row["teacher_free"] and row["teacher"] == f"run:{teacher.directory}"
        assert row["gap_adv"] == pytest.approx(row["var_student_adv"] - row["var_teacher_adv"])
        assert row["dvar_student"] == pytest.approx(
            row["var_student_adv"] - row["var_student_clean"]
        )
    # Var of the student's clean features, recomputed here from the model and the data
    from ardbench.data import load_dataset

    s = students[0]
    xs, _ = load_dataset("digits").test_subset(64)  # the demo's dataset, first 64 test points
    with torch.no_grad():
        _, feats = logits_and_features(s.model(), xs)
    assert table.loc[s.run_id, "var_student_clean"] == pytest.approx(feature_variance(feats))
    # the teacher's own run measured against itself: no gap at all
    own = table.loc[teacher.run_id]
    assert own["teacher_free"] and own["gap_clean"] == 0 and own["gap_adv"] == 0
    assert table.loc[baseline.run_id, "teacher"] == f"run:{teacher.directory}"

    per_class = pd.read_csv(out / "variance_gap_per_class.csv")
    assert len(per_class) == 5 * 10
    assert (per_class.groupby("run_id")["n"].sum() == 64).all()
    fits = pd.read_csv(out / "variance_gap_fit.csv")
    assert set(zip(fits["series"], fits["x"], strict=True)) == {
        (series, x)
        for series in ("distillation", "teacher-free")
        for x in ("gap_adv", "dvar_student")
    }
    distill = table[~table["teacher_free"]]
    fit = fits[(fits["series"] == "distillation") & (fits["x"] == "gap_adv")].iloc[0]
    expected = fit_line(distill["gap_adv"], 100 * distill["robust_acc"])
    assert fit["n"] == 3 and fit["slope"] == pytest.approx(expected["slope"], rel=1e-6)
    assert matplotlib.image.imread(out / "variance_gap.png").shape[0] > 100
    assert "pearson_r" in capsys.readouterr().out

    # --baselines with no directory: the named runs only
    only = tmp_path / "only"
    argv = ["analyze", "variance-gap", *(str(s.directory) for s in students)]
    assert main([*argv, "--out", str(only), "--baselines"]) == 0
    assert len(pd.read_csv(only / "variance_gap.csv")) == 3


def test_variance_gap_needs_a_distillation_run(demo_runs, tmp_path, capsys):
    _, teacher, _, baseline = demo_runs
    argv = ["analyze", "variance-gap", str(teacher.directory), str(baseline.directory)]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "no distillation run" in capsys.readouterr().err


def test_an_unfinished_run_is_refused(demo_runs, tmp_path, capsys):
    _, _, students, _ = demo_runs
    unfinished = tmp_path / "runs" / "half"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text(json.dumps(students[0].config_dict))
    argv = ["analyze", "variance-gap", str(students[0].directory), str(unfinished)]
    assert main([*argv, "--out", str(tmp_path / "o"), "--baselines"]) == 2
    assert "unfinished runs" in capsys.readouterr().err
