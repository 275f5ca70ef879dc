"""Usability: --threads, list teachers, compare's options, TensorBoard logging."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import ardbench
from ardbench.cli import main
from ardbench.errors import ArdbenchError
from ardbench.results.records import example_record, write_record
from ardbench.teachers import robustbench_path
from ardbench.threads import default_threads, parse_threads, physical_cores, set_threads

TINY = {"epochs": 2, "train_subset": 64, "probe": 16, "eval": {"n_examples": 16}}
TINY_SETS = ["--epochs", "1", "--set", "train_subset=64", "--set", "probe=16"]
TINY_SETS += ["--set", "eval.n_examples=16", "--set", "attack.steps=1"]


# ------------------------------------------------------------------------------- threads


def test_threads_default_to_omp_num_threads_else_physical_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert default_threads() == physical_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # a malformed variable falls back
    assert default_threads() == physical_cores()
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ArdbenchError, match="positive integer"):
        parse_threads("0")


def test_run_threads_flag_reaches_the_record(tmp_path):
    before = torch.get_num_threads()
    try:
        argv = ["run", "--method", "pgd_at", "--preset", "demo", *TINY_SETS]
        assert main([*argv, "--runs", str(tmp_path), "--threads", "1", "--quiet"]) == 0
    finally:
        torch.set_num_threads(before)
    (record,) = tmp_path.glob("*/record.json")
    assert json.loads(record.read_text())["hardware"]["torch_threads"] == 1


# ------------------------------------------------------------------------------ teachers


def test_list_teachers_shows_what_is_cached_and_where_robustbench_files_go(
    tmp_path, monkeypatch, capsys
):
    models = tmp_path / "models"
    monkeypatch.setenv("ARDBENCH_MODEL_DIR", str(models))
    monkeypatch.setenv("COLUMNS", "400")  # table cells on one line
    present = robustbench_path("Zhang2019Theoretically", "cifar10")
    assert present == models / "cifar10" / "Linf" / "Zhang2019Theoretically.pt"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"\0" * 2048)
    runs = tmp_path / "runs"
    write_record(runs / "my-teacher", example_record(run_id="my-teacher"))
    assert main(["list", "teachers", "--runs", str(runs)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # table cells wrap
    assert "robustbench:Zhang2019Theoretically" in out and "cifar10 Linf, 2.0 KiB" in out
    assert "run:my-teacher" in out
    assert f"robustbench:Zhang2019Theoretically (cifar10): present at {present}" in out
    assert "robustbench:Gowal2020Uncovering (cifar100): missing at " in out
    assert "(any)/standard" in out  # the standard recipe names it


def test_the_documented_robustbench_path_is_where_the_loader_looks(tmp_path, monkeypatch):
    from ardbench.models import load_model

    monkeypatch.setenv("ARDBENCH_MODEL_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_model("robustbench:Zhang2019Theoretically", dataset="cifar10")
    assert str(robustbench_path("Zhang2019Theoretically", "cifar10")) in str(info.value)


# ------------------------------------------------------------------------------- compare


def _record(run_id, method, seed, clean, pgd20, epochs):
    return example_record(
        run_id=run_id,
        seed=seed,
        epochs=epochs,
        method={"name": method, "config": {}, "config_hash": "2" * 16},
        recipe=f"baselines/{method}/standard.yaml",
        config={"method": method, "train": {"seed": seed, "epochs": epochs}},
        eval={"accuracy": {"clean": clean, "pgd20": pgd20}, "n_examples": 100},
    )


def test_compare_records_option_epochs_column_and_hint(tmp_path, capsys):
    records = tmp_path / "records"
    write_record(records / "a.json", _record("ard-s0", "ard", 0, 0.8, 0.5, 7))
    # another budget is another protocol identity, hence another table: nothing to compare
    other = tmp_path / "other.json"
    write_record(other, _record("rslad-s1", "rslad", 1, 0.7, 0.45, 3))
    assert main(["compare", str(other), "--records", str(records)]) == 1
    assert "nothing to compare" in capsys.readouterr().err
    mine = tmp_path / "mine.json"
    write_record(mine, _record("rslad-s0", "rslad", 0, 0.7, 0.45, 7))
    for flag in ("--records", "--leaderboard-runs", "--leaderboard"):  # old names still work
        assert main(["compare", str(mine), flag, str(records)]) == 0
        out = capsys.readouterr().out
        assert "epochs" in out and "ard" in out
    lines = [ln for ln in out.splitlines() if "ours" in ln or "│ 1 " in ln]
    assert lines[0].rstrip(" │").endswith("7") and lines[1].rstrip(" │").endswith("7")
    assert main(["compare", str(mine), "--records", str(tmp_path / "empty")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(mine), "--records", str(tmp_path / "empty")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "nothing to compare" in err and "--records DIR" in err
    assert "ardbench leaderboard --add" in err


def test_compare_help_names_records_not_the_old_flags(capsys):
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--records DIR" in text and "--leaderboard-runs" not in text


# --------------------------------------------------------------------------- tensorboard


def test_tensorboard_missing_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    argv = ["run", "--method", "pgd_at", "--preset", "demo", *TINY_SETS]
    assert main([*argv, "--runs", str(tmp_path / "runs"), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "pip install tensorboard" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_tensorboard_logs_each_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = ardbench.train(
        method="pgd_at", preset="demo", runs=tmp_path, progress=False, tensorboard=True, **TINY
    )
    events = EventAccumulator(str(run.directory / "tensorboard"))
    events.Reload()
    assert {"loss/ce_adv", "probe/clean", "probe/pgd10", "lr"} <= set(events.Tags()["scalars"])
    log = run.log()
    logged = [(e.step, e.value) for e in events.Scalars("probe/pgd10")]
    assert logged == [(r["epoch"], pytest.approx(r["probe"]["pgd10"])) for r in log]
    assert [e.value for e in events.Scalars("loss/ce_adv")] == pytest.approx(
        [r["losses"]["ce_adv"] for r in log]
    )
