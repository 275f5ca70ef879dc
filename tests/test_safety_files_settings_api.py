"""Hostile input, round 2: records that lie, YAML bombs, unbounded files, settings, text, API.

Every command-line case: exit 2, one ``ardbench: error:`` line naming the problem, no
traceback, and (where a folder is the target) nothing written. Cases that could hang run in a
subprocess with a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ardbench
from ardbench import api
from ardbench.cli import main
from ardbench.errors import ArdbenchError
from ardbench.results.records import example_record, find_records, record_bytes

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARD_RUNS = ROOT / "leaderboard" / "runs"


def _one_line(capsys, expect: str) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ardbench: error:"), err
    assert "Traceback" not in err and re.search(expect, lines[0]), lines[0]


def _cli(*argv: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    code = "import sys; from ardbench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _assert_one_line(proc: subprocess.CompletedProcess, expect: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("ardbench: error:"), proc.stderr
    assert re.search(expect, lines[0]), lines[0]


# ---------------------------------------------------------------------- records that lie


def _real_record() -> dict:
    """A committed leaderboard record (it has a protocol block and a full config)."""
    rec = next(r for _, r in find_records(LEADERBOARD_RUNS) if r.protocol is not None)
    return copy.deepcopy(rec.to_dict())  # the JSON form, to edit


def _lie(kind: str) -> dict:
    rec = _real_record()
    acc, n = rec["eval"]["accuracy"], rec["eval"]["n_examples"]
    if kind == "aa-above-clean":
        acc["aa"] = min(1.0, acc["clean"] + 1 / n)
    elif kind == "pgd-above-clean":
        acc["pgd20"] = min(1.0, acc["clean"] + 2 / n)
    elif kind == "not-k-over-n":
        acc["clean"] = acc["clean"] - 0.3 / n
    elif kind == "identity-of-another-protocol":
        rec["protocol"]["identity"] = "0123456789ab"
    elif kind == "config-changed-under-its-identity":
        rec["config"]["train"]["epochs"] += 1
        rec["epochs"] += 1
    elif kind == "40-mb-field":
        rec["student"]["spec"] = "x" * (40 << 20)
    elif kind == "1-mb-field":
        rec["recipe"] = "x" * (1 << 20)
    return rec


LIES = {
    "aa-above-clean": r"eval\.accuracy\.aa.*above the clean accuracy",
    "pgd-above-clean": r"eval\.accuracy\.pgd20.*above the clean accuracy",
    "not-k-over-n": r"eval\.accuracy\.clean.*not a whole number of points",
    "identity-of-another-protocol": r"protocol\.identity.*not the identity of the record's own",
    "config-changed-under-its-identity": r"protocol\.identity",
    "40-mb-field": r"lie\.json: record: \d+ bytes, over the \d+-byte limit",
    "1-mb-field": r"record field 'recipe'.*characters, over",
}


def test_the_committed_records_are_plausible() -> None:
    """The check refuses lies, not the records the leaderboard holds."""
    assert sum(1 for _ in find_records(LEADERBOARD_RUNS)) > 10


@pytest.mark.parametrize("kind", list(LIES))
def test_add_refuses_a_record_that_lies(kind, tmp_path, capsys) -> None:
    src = tmp_path / "lie.json"
    src.write_bytes(record_bytes(_lie(kind)))
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    runs.mkdir(parents=True)
    argv = ["leaderboard", "--add", str(src), "--runs", str(runs), "--out", str(out)]
    assert main(argv) == 2
    _one_line(capsys, LIES[kind])
    assert not list(runs.rglob("*.json"))


@pytest.mark.parametrize("kind", ["aa-above-clean", "identity-of-another-protocol"])
def test_tables_refuse_a_lying_record_already_in_runs(kind, tmp_path, capsys) -> None:
    runs = tmp_path / "lb" / "runs"
    runs.mkdir(parents=True)
    (runs / "lie.json").write_bytes(record_bytes(_lie(kind)))
    assert main(["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "lb")]) == 2
    _one_line(capsys, LIES[kind])
    assert not (tmp_path / "lb" / "README.md").exists()


# ----------------------------------------------------------------------------------- YAML

BOMB = "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]]"
YAML_CASES = {
    "alias-bomb": (f"seeds: {BOMB}\n", r"aliases are not allowed|anchors are not allowed"),
    "deep-brackets": ("seeds: " + "[" * 30000 + "]" * 30000 + "\n", r"nested more than"),
    "duplicate-key": ("methods: kd\nseeds: 0\nmethods: ard\n", r"'methods' appears twice"),
}


@pytest.mark.parametrize("name", list(YAML_CASES))
def test_sweep_file_yaml_limits(name, tmp_path, capsys) -> None:
    text, expect = YAML_CASES[name]
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    assert main(["sweep", str(grid), "--dir", str(tmp_path / "sw"), "--dry-run"]) == 2
    _one_line(capsys, expect)
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize(
    "value, expect",
    [
        (f"train={BOMB}", r"--set train: YAML (aliases|anchors) are not allowed"),
        ("train=" + "[" * 30000, r"--set train: YAML nested more than"),
        ("train={lr: 0.1, lr: 0.2}", r"'lr' appears twice"),
    ],
    ids=["alias-bomb", "deep-brackets", "duplicate-key"],
)
def test_set_values_go_through_the_safe_loader(value, expect, tmp_path, capsys) -> None:
    argv = ["run", "--method", "kd", "--student", "small_cnn", "--dataset", "npz:x.npz"]
    assert main([*argv, "--runs", str(tmp_path / "runs"), "--set", value, "--dry-run"]) == 2
    _one_line(capsys, expect)
    assert not (tmp_path / "runs").exists()


def test_recipe_with_a_repeated_section(tmp_path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 300\n")
    argv = ["run", "--method", "kd", "--recipe", str(recipe), "--student", "small_cnn"]
    assert main([*argv, "--dataset", "npz:x.npz", "--dry-run"]) == 2
    _one_line(capsys, r"'train' appears twice")


# ---------------------------------------------------------------------- settings and seeds


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--set", f"train.seed={2**70}"], r"train\.seed must be at most 2\*\*63 - 1"),
        (["--seed", str(2**64)], r"train\.seed must be at most 2\*\*63 - 1 \(64 bits\)"),
        (["--set", "train.seed=" + "9" * 5000], r"--set train\.seed: Exceeds the limit"),
    ],
    ids=["set-70-bit", "flag-64-bit", "5000-digits"],
)
def test_a_seed_beyond_64_bits_is_one_line_before_work(argv, expect, tmp_path, capsys) -> None:
    base = ["run", "--method", "kd", "--student", "small_cnn", "--dataset", "npz:x.npz"]
    assert main([*base, "--runs", str(tmp_path / "runs"), *argv]) == 2
    _one_line(capsys, expect)
    assert not (tmp_path / "runs").exists()


def test_eval_seed_beyond_64_bits(capsys) -> None:
    argv = ["eval", "small_cnn", "--dataset", "npz:x.npz", "--seed", str(2**64)]
    assert main(argv) == 2
    _one_line(capsys, r"--seed must be at most 2\*\*63 - 1")


# --------------------------------------------------------------- files that are not files


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _to_dev_zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("make", [_fifo, _to_dev_zero], ids=["fifo", "dev-zero"])
def test_a_runs_folder_with_a_special_record_file(make, tmp_path) -> None:
    runs = tmp_path / "runs"
    make(runs / "run1" / "record.json")
    proc = _cli("leaderboard", "--runs", str(runs), "--out", str(tmp_path / "out"), timeout=120)
    _assert_one_line(proc, r"record\.json.*not a regular file")


@pytest.mark.parametrize("make", [_fifo, _to_dev_zero], ids=["fifo", "dev-zero"])
def test_a_special_json_beside_records_is_skipped(make, tmp_path) -> None:
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "r.json").write_bytes(record_bytes(example_record(run_id="a")))
    make(runs / "a" / "notes.json")
    proc = _cli("leaderboard", "--runs", str(runs), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("make", [_fifo, _to_dev_zero], ids=["fifo", "dev-zero"])
def test_a_special_recipe_file(make, tmp_path) -> None:
    recipe = make(tmp_path / "r.yaml")
    argv = ["run", "--method", "kd", "--recipe", str(recipe), "--student", "small_cnn"]
    proc = _cli(*argv, "--dataset", "npz:x.npz", "--dry-run", timeout=120)
    _assert_one_line(proc, r"not a regular file")


def _run_dir(tmp_path: Path, meta: dict | None) -> Path:
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"")
    if meta is not None:
        (run / "model.json").write_text(json.dumps(meta))
    return run


@pytest.mark.parametrize("classes", [10**12, 0, 1.5])
def test_model_json_claiming_absurd_classes(classes, tmp_path) -> None:
    from ardbench.models import load_model

    run = _run_dir(tmp_path, {"arch": "small_cnn", "num_classes": classes})
    with pytest.raises(ArdbenchError, match=r"num_classes"):
        load_model(f"run:{run}")


def test_model_json_that_is_a_fifo(tmp_path) -> None:
    import hostile_files as hf

    data = hf.npz(tmp_path / "d.npz", x_test=hf.images(4), y_test=hf.labels(4))
    run = _run_dir(tmp_path, None)
    _fifo(run / "model.json")
    proc = _cli("eval", f"run:{run}", "--dataset", f"npz:{data}", "--device", "cpu", timeout=120)
    _assert_one_line(proc, r"model\.json.*not a regular file")


def test_build_arch_bounds_classes() -> None:
    from ardbench.models import build_arch

    with pytest.raises(ArdbenchError, match=r"num_classes must be in \[1, 100000\]"):
        build_arch("small_cnn", num_classes=10**12)


def test_sweep_status_survives_a_deeply_nested_config(tmp_path) -> None:
    from ardbench.sweep import find_run_dirs

    run = tmp_path / "r1"
    run.mkdir()
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    _fifo(tmp_path / "r2" / "config.json")
    assert find_run_dirs(tmp_path) == {}


# ------------------------------------------------------------------- text that reaches markdown


def test_bidirectional_controls_are_shown_as_codes(tmp_path) -> None:
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    rec = example_record(run_id="bidi", recipe="safe\u202eevil\u2066")
    (runs).mkdir(parents=True)
    (runs / "bidi.json").write_bytes(record_bytes(rec))
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    text = "".join(p.read_text() for p in out.rglob("*.md"))
    assert "safe" in text and "\\u202e" in text
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", text)


# ------------------------------------------------------------------------------ Python API


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: api.train(method=123), "method"),
        (lambda: api.train(sets="train.lr=0.1"), "sets"),
        (lambda: api.train(method="kd", runs=5), "runs"),
        (lambda: api.config(method="kd", seed="0"), "seed"),
        (lambda: api.config(method="kd", epochs="3"), "epochs"),
        (lambda: api.evaluate(42, dataset="digits"), "model"),
        (lambda: api.evaluate("small_cnn", dataset="digits", n_examples="8"), "n_examples"),
        (lambda: api.evaluate("small_cnn", dataset=5), "dataset"),
        (lambda: api.evaluate("small_cnn", dataset="digits", attacks=[1]), "attacks"),
        (lambda: api.evaluate("small_cnn", dataset="digits", eps=True), "eps"),
        (lambda: api.results(123), r"paths\[0\]"),
        (lambda: api.results("runs", None), r"paths\[1\]"),
    ],
)
def test_api_checks_argument_types_at_the_boundary(call, name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArdbenchError, match=rf"^{name} must be") as info:
        call()
    assert isinstance(info.value, TypeError)
    assert not list(tmp_path.iterdir())  # nothing written before the check
    assert isinstance(info.value, ardbench.errors.ArdbenchError)


def test_api_seed_beyond_64_bits_before_work(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArdbenchError, match=r"train\.seed must be at most 2\*\*63 - 1"):
        api.train(method="kd", student="small_cnn", dataset="npz:x.npz", seed=2**70)
    assert not list(tmp_path.iterdir())
