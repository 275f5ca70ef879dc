"""Later evaluations (``ardbench leaderboard --attach``): a column a record lacks, added from an
``ardbench eval`` of the same checkpoint on the same points, never replacing the record's own."""

from __future__ import annotations

import copy
import json

import pytest

from ardbench.cli import main
from ardbench.results.later_eval import attach_later_evals, merge_later_eval
from ardbench.results.leaderboard import collect_records
from ardbench.results.records import RecordError, example_record, write_record
from ardbench.results.render import render_leaderboard

SHA = "4" * 64  # example_record's checkpoint
FP = "0" * 64  # and data fingerprint


def record(run_id="pgd_at-s0", sha=SHA, pgd=0.5) -> dict:
    method = run_id.split("-")[0]
    return example_record(
        run_id=run_id,
        method={"name": method, "unofficial": False, "teacher_in_attack": False},
        config={"method": method, "train": {"seed": 0, "epochs": 1}},
        checkpoint={"path": "runs/x/model.pt", "sha256": sha},
        eval={"n_examples": 100, "accuracy": {"clean": 0.8, "pgd20": pgd}, "split": "test"},
    )


def later(sha=SHA, **over) -> dict:
    """What `ardbench eval run:ID --attacks clean,pgd20,aa --json` writes (the fields used)."""
    ev = {
        "n_examples": 100,
        "eps": 8 / 255,
        "norm": "Linf",
        "accuracy": {"clean": 0.8, "pgd20": 0.49, "aa": 0.45},
        "worst_class": {"clean": 0.6, "pgd20": 0.3, "aa": 0.2},
        "settings": {"aa": {"attack": "autoattack", "version": "standard", "seed": 0}},
        "aa_breakdown": {"apgd-ce": 0.47, "apgd-t": 0.45, "fab-t": 0.45, "square": 0.45},
        "aa_unreliable": False,
        "warnings": [],
        "versions": {"ardbench": "0.1.0"},
        "model": {"spec": "run:pgd_at-s0", "sha256": sha},
        "data": {"spec": "cifar10", "fingerprint": FP, "first_n_test_points": 100},
    }
    ev.update(over)
    return ev


def test_merge_adds_only_missing_columns_and_says_so():
    merged = merge_later_eval(record(), later())
    acc = merged["eval"]["accuracy"]
    assert acc == {"clean": 0.8, "pgd20": 0.5, "aa": 0.45}  # the record's pgd20 is kept
    assert merged["eval"]["settings"]["aa"]["attack"] == "autoattack"
    assert merged["eval"]["later_eval"]["columns"] == ["aa"]
    assert merged["eval"]["later_eval"]["file"] == "pgd_at-s0.eval.json"
    assert record()["eval"]["accuracy"] == {"clean": 0.8, "pgd20": 0.5}  # input untouched


@pytest.mark.parametrize(
    ("ev", "message"),
    [
        (later(sha="5" * 64), "model sha256 555555555555 is not the record's checkpoint"),
        (later(data={"fingerprint": "1" * 64}), "data fingerprint 111111111111 is not"),
        (later(eps=4 / 255), "eps 0.0156"),
        (later(norm="L2"), "norm L2 is not the track's Linf"),
        (later(n_examples=50), "50 points, the record 100 (use --n-examples 100)"),
        (later(accuracy={"clean": 0.8, "pgd20": 0.5}), "adds no column the record lacks"),
    ],
)
def test_merge_refuses_another_model_points_or_threat_model(ev, message):
    with pytest.raises(RecordError, match="not a later evaluation of this record") as exc:
        merge_later_eval(record(), ev)
    assert message in str(exc.value)


def test_test_only_evaluations_match_by_test_fingerprint():
    """`ardbench eval` on a test-only copy of the data (other fingerprint: no training arrays)
    fits a record that stored the fingerprint of its test arrays, and only then."""
    r = record()
    ev = later(data={"fingerprint": "8" * 64, "test_fingerprint": "9" * 64})
    with pytest.raises(RecordError, match="predates test fingerprints"):
        merge_later_eval(r, ev)
    r["track"]["test_fingerprint"] = "9" * 64
    assert merge_later_eval(r, ev)["eval"]["accuracy"]["aa"] == 0.45
    r["track"]["test_fingerprint"] = "a" * 64
    with pytest.raises(RecordError, match="nor its test fingerprint 999999999999"):
        merge_later_eval(r, ev)


def test_holdout_records_take_no_later_evaluation():
    r = record()
    r["eval"]["split"] = "holdout: last 100 training examples"
    with pytest.raises(RecordError, match="held-out training examples"):
        merge_later_eval(r, later())


def test_attach_files_beside_the_record_and_the_table_shows_aa(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "lb"
    write_record(runs / "a" / "pgd_at-s0.json", record())
    write_record(runs / "a" / "trades-s0.json", record("trades-s0", sha="6" * 64, pgd=0.6))
    ev_path = tmp_path / "e.json"
    ev_path.write_text(json.dumps(later()))
    before = render_leaderboard(collect_records(runs))

    rc = main(["leaderboard", "--runs", str(runs), "--out", str(out), "--attach", str(ev_path)])
    assert rc == 0 and "attached:" in capsys.readouterr().out
    filed = runs / "a" / "pgd_at-s0.eval.json"
    assert filed.read_bytes() == ev_path.read_bytes()
    records = {r["run_id"]: r for r in collect_records(runs)}
    assert records["pgd_at-s0"]["eval"]["accuracy"]["aa"] == 0.45
    assert "aa" not in records["trades-s0"]["eval"]["accuracy"]
    (table,) = [t for name, t in render_leaderboard(collect_records(runs)).items() if "__" in name]
    assert table != next(t for n, t in before.items() if "__" in n)
    assert "45.00" in table and "AA from a later evaluation of the same checkpoint" in table
    # AA on one row only cannot order the table: trades (higher PGD-20) ranks first
    assert table.index("| trades |") < table.index("| pgd_at |")
    assert "AutoAttack is missing for some runs" in table
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out), "--check"]) == 0

    # attaching the same file again is a no-op; a different one is refused
    ((_, status),) = attach_later_evals([ev_path], runs)
    assert status == "already there"
    other = tmp_path / "e2.json"
    other.write_text(json.dumps(later(accuracy={"clean": 0.8, "aa": 0.44})))
    with pytest.raises(RecordError, match="a different later evaluation of this run"):
        attach_later_evals([other], runs)


def test_attach_refuses_unknown_checkpoints_and_non_eval_files(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs / "pgd_at-s0.json", record())
    unknown = tmp_path / "u.json"
    unknown.write_text(json.dumps(later(sha="7" * 64)))
    with pytest.raises(RecordError, match="no record under .* has a checkpoint with sha256 7777"):
        attach_later_evals([unknown], runs)
    junk = tmp_path / "j.json"
    junk.write_text(json.dumps({"hello": 1}))
    with pytest.raises(RecordError, match="not an `ardbench eval --json` result"):
        attach_later_evals([junk], runs)
    mismatch = tmp_path / "m.json"
    mismatch.write_text(json.dumps(later(eps=2 / 255)))
    with pytest.raises(RecordError, match="eps"):
        attach_later_evals([mismatch], runs)
    assert not list(runs.glob("*.eval.json"))  # nothing filed by a refused call


def test_a_real_eval_json_attaches(tmp_path):
    """End to end with the evaluator's own JSON: train nothing, evaluate a saved model."""
    import torch

    from ardbench.eval import evaluate_spec
    from ardbench.models import build_arch

    model_path = tmp_path / "m.pt"
    torch.manual_seed(0)
    torch.save(build_arch("small_cnn", num_classes=10).state_dict(), model_path)
    ev_path = tmp_path / "e.json"
    res = evaluate_spec(
        f"small_cnn:{model_path}",
        "digits",
        n_examples=8,
        attacks="clean,fgsm",
        eps="8/255",
        device="cpu",
        json_out=ev_path,
        progress=False,
    )
    r = copy.deepcopy(record())
    r["checkpoint"]["sha256"] = res.model["sha256"]
    r["track"].update(dataset="digits", data_fingerprint=res.data["fingerprint"], eps=8 / 255)
    r["eval"].update(n_examples=8, accuracy={"clean": res.accuracy["clean"]})
    write_record(tmp_path / "runs" / "x.json", r)
    ((dest, status),) = attach_later_evals([ev_path], tmp_path / "runs")
    assert status == "attached" and dest.name == "pgd_at-s0.eval.json"
    (merged,) = collect_records(tmp_path / "runs")
    assert merged["eval"]["accuracy"]["fgsm"] == res.accuracy["fgsm"]


def test_end_to_end_a_run_then_a_later_evaluation_on_a_test_only_copy(tmp_path):
    """Train (end-of-run evaluation: clean only), evaluate the run's checkpoint later on a
    test-only copy of its data (as the real track's AA was), attach, and render."""
    import numpy as np

    from ardbench.eval import evaluate_spec
    from ardbench.recipes import resolve_config
    from ardbench.results.leaderboard import add_records
    from ardbench.train.trainer import train

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 48)
    x = (rng.integers(0, 256, (48, 32, 32, 3)) // 4 + y[:, None, None, None] * 20).astype(np.uint8)
    np.savez(tmp_path / "full.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    np.savez(tmp_path / "test.npz", x_test=x[:16], y_test=y[:16])
    cfg = resolve_config(
        "pgd_at",
        cli={"dataset": f"npz:{tmp_path / 'full.npz'}", "student": "small_cnn"},
        sets=["train.epochs=1", "attack.steps=1", "eval.attacks=clean"],
    )
    res = train(cfg, runs_dir=tmp_path / "runs", progress=False)
    lb = tmp_path / "lb"
    add_records([res.run_dir], lb)
    ev_path = tmp_path / "later.json"
    later_res = evaluate_spec(
        f"run:{res.run_id}",
        f"npz:{tmp_path / 'test.npz'}",
        attacks="clean,fgsm",
        eps=cfg.attack.eps,
        runs_dir=tmp_path / "runs",
        device="cpu",
        json_out=ev_path,
        progress=False,
    )
    assert later_res.data["fingerprint"] != res.record["track"]["data_fingerprint"]
    ((_, status),) = attach_later_evals([ev_path], lb)
    assert status == "attached"
    (merged,) = collect_records(lb)
    assert merged["eval"]["accuracy"]["fgsm"] == later_res.accuracy["fgsm"]
    assert merged["eval"]["accuracy"]["clean"] == res.record["eval"]["accuracy"]["clean"]
