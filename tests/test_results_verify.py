"""``ardbench verify``, ``submit`` and ``leaderboard --add`` on a tiny real run: the untouched
run verifies; each kind of tampering fails with its one-line reason and is never verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import ardbench
from ardbench.cli import main
from ardbench.models import build_arch
from ardbench.results.submit import check_bundle
from ardbench.results.verify import claim_digest, verify_path
from ardbench.site.data import FAILED, VERIFIED, _read_verification

TINY = {
    "epochs": 1,
    "train_subset": 512,
    "probe": 32,
    "eval": {"n_examples": 64, "attacks": ["clean", "fgsm", "pgd20", "cw"]},
    "attack": {"steps": 1},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify_runs")
    run = ardbench.train(
        method="natural", preset="demo", seed=0, runs=root, progress=False, threads=1, **TINY
    )
    return run.directory


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    """A fresh copy of the run to tamper with."""
    dest = tmp_path / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


def _edit(run: Path, change) -> None:
    path = run / "record.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


def test_an_untouched_run_verifies_and_the_site_shows_it(copy):
    result = ardbench.verify(copy, threads=1)
    assert result["state"] == "verified" and result["how"] == "re-evaluated"
    assert set(result["columns"]) == {"clean", "fgsm", "pgd20", "cw"}
    assert all(c["delta_points"] == 0 and c["agree"] for c in result["columns"].values())
    assert result["weights"]["found_as"] == "run directory"
    assert result["weights"]["path"].endswith("model.safetensors")
    written = copy / f"{copy.name}.verify.json"
    assert json.loads(written.read_text())["state"] == "verified"
    record = json.loads((copy / "record.json").read_text())
    assert _read_verification(written, record).state == VERIFIED
    # the record edited after its verification no longer matches the verified claim
    record["eval"]["accuracy"]["clean"] = 1.0
    assert claim_digest(record) != result["record_digest"]
    assert _read_verification(written, record).state == FAILED


def test_two_threads_give_the_same_counts(copy):
    """The measured tolerance: clean/FGSM/PGD-20/CW counts at 2 threads equal the run's own
    final evaluation at 1 thread."""
    result = ardbench.verify(copy, threads=2, write=False)
    assert result["threads"] == 2 and result["state"] == "verified"


def _raise_pgd20(record):
    record["eval"]["accuracy"]["pgd20"] = min(1.0, record["eval"]["accuracy"]["pgd20"] + 3 / 64)


def _swap_weights(run: Path) -> None:
    torch.manual_seed(123)
    state = build_arch("small_cnn", 10).state_dict()
    from safetensors.torch import save_file

    save_file(state, str(run / "model.safetensors"))
    torch.save(state, run / "model.pt")


def _edit_hash(record):
    record["checkpoint"]["sha256"] = "a" * 64
    record["checkpoint"]["weights"]["sha256"] = "b" * 64


def _swap_and_rehash(run: Path) -> None:
    """The careful forger: other weights and the record's hashes edited to match them."""
    from ardbench.io import file_sha256

    _swap_weights(run)
    _edit(run, lambda r: r["checkpoint"].update(sha256=file_sha256(run / "model.pt")))
    _edit(
        run,
        lambda r: r["checkpoint"]["weights"].update(sha256=file_sha256(run / "model.safetensors")),
    )


def _remove_weights(run: Path) -> None:
    """The record on another machine: no weights beside it, its checkpoint path not there."""
    (run / "model.safetensors").unlink()
    (run / "model.pt").unlink()
    _edit(run, lambda r: r["checkpoint"].update(path="/elsewhere/runs/x/model.pt"))


def _other_data(record):
    record["track"]["data_fingerprint"] = "c" * 64


TAMPERING = {
    "number raised": (lambda run: _edit(run, _raise_pgd20), "pgd20 does not match"),
    "weights swapped": (_swap_weights, "weights do not match"),
    "sha256 edited": (lambda run: _edit(run, _edit_hash), "weights do not match"),
    "weights missing": (_remove_weights, "weights missing"),
    "data fingerprint edited": (lambda run: _edit(run, _other_data), "data fingerprint differs"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_fails_with_a_one_line_reason(copy, kind, capsys):
    tamper, reason = TAMPERING[kind]
    tamper(copy)
    assert main(["verify", str(copy), "--threads", "1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("failed") and reason in out and len(out.strip().splitlines()) == 1
    written = json.loads((copy / f"{copy.name}.verify.json").read_text())
    assert written["state"] == "failed" and reason in written["reason"]


def test_swapped_weights_with_matching_hashes_fail_on_the_numbers(copy):
    _swap_and_rehash(copy)
    result = ardbench.verify(copy, threads=1, write=False)
    assert result["state"] == "failed" and "does not match" in result["reason"]


def test_a_partial_check_says_so(copy):
    result = ardbench.verify(copy, columns=["clean", "pgd20"], n=32, threads=1, write=False)
    assert result["state"] == "partial" and "first 32 of 64" in result["note"]
    assert sorted(result["not_compared"]) == ["cw", "fgsm"]
    low, high = result["columns"]["clean"]["bound_points"]
    assert low <= result["columns"]["clean"]["record_points"] <= high and high - low == 32
    # 64/64 claimed while fewer than 32 of the first 32 are right: no other 32 points help
    assert result["columns"]["clean"]["measured_points"] < 32
    _edit(copy, lambda r: r["eval"]["accuracy"].update(clean=1.0))
    _, bad = verify_path(copy, columns=["clean"], n=32, write=False)
    assert bad["state"] == "failed" and "clean does not match" in bad["reason"]


def test_submit_bundle_and_leaderboard_add_verify(copy, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["submit", str(copy), "--out", str(bundle)]) == 0
    rid = copy.name
    assert (bundle / "records" / f"{rid}.json").is_file()
    assert (bundle / "weights" / f"{rid}.safetensors").is_file()
    assert (bundle / "logs" / f"{rid}.log.jsonl").is_file()
    assert check_bundle(bundle) == []
    # the bundle's record finds its weights in the bundle and verifies there
    assert ardbench.verify(bundle / "records" / f"{rid}.json", write=False)["state"] == "verified"
    lb = tmp_path / "lb"
    argv = ["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb)]
    assert main([*argv, "--add", str(bundle / "records" / f"{rid}.json")]) == 0
    assert "added (verified)" in capsys.readouterr().out
    assert (lb / "weights" / f"{rid}.safetensors").is_file()
    (added,) = (lb / "runs").rglob(f"{rid}.verify.json")
    assert json.loads(added.read_text())["state"] == "verified"
    # the added record verifies again from its leaderboard place (weights in lb/weights)
    (record,) = (lb / "runs").rglob(f"{rid}.json")
    assert ardbench.verify(record, write=False)["state"] == "verified"
    # a bundle whose weights were replaced after packing: the manifest and verify both say so
    shutil.copyfile(copy / "model.pt", bundle / "weights" / f"{rid}.safetensors")
    assert check_bundle(bundle) == [
        f"weights/{rid}.safetensors: sha256 differs from the manifest's"
    ]
    result = ardbench.verify(bundle / "records" / f"{rid}.json", write=False)
    assert result["state"] == "failed" and "weights do not match" in result["reason"]


def test_leaderboard_add_refuses_tampered_records(copy, tmp_path, capsys):
    lb = tmp_path / "lb"
    argv = ["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb), "--add", str(copy)]
    _edit(copy, _raise_pgd20)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "not added" in err and "pgd20 does not match" in err
    assert not (lb / "runs").exists() or not any((lb / "runs").rglob("*.json"))
    _remove_weights(copy)
    assert main([*argv, "--no-verify"]) != 0  # weights are required even then
    assert "weights missing" in capsys.readouterr().err


def test_leaderboard_add_without_verification_is_loud_and_unverified(copy, tmp_path, capsys):
    lb = tmp_path / "lb"
    argv = ["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb), "--add", str(copy)]
    assert main([*argv, "--no-verify"]) == 0
    captured = capsys.readouterr()
    assert "WITHOUT re-evaluating" in captured.err and "added (unverified)" in captured.out
    (added,) = (lb / "runs").rglob("*.verify.json")
    record = json.loads(next(p for p in (lb / "runs").rglob("*.json") if p != added).read_text())
    assert _read_verification(added, record).state == "unverified"


@pytest.mark.slow
def test_retrain_lands_on_the_record_on_the_same_machine(copy, tmp_path):
    """Same code, config, seed and threads on one machine: bitwise the same numbers."""
    result = ardbench.verify(copy, retrain=True, runs=tmp_path / "rerun", threads=1)
    assert result["how"] == "re-trained" and result["row_seeds"] == 1
    assert result["state"] == "partial"  # one seed: no std to judge by
    assert all(c["delta_points"] == 0 for c in result["columns"].values())


def test_a_later_evaluations_columns_are_checked_too(copy):
    """A column attached later (``leaderboard --attach``: AutoAttack, usually) is shown in the
    table, so verify re-evaluates it as well, with the later evaluation's seed; raised in its
    ``.eval.json``, it fails like a raised record number."""
    record = json.loads((copy / "record.json").read_text())
    cw = record["eval"]["accuracy"]["cw"]
    _edit(copy, lambda r: [r["eval"][k].pop("cw", None) for k in ("accuracy", "worst_class")])
    later = {
        "accuracy": {"cw": cw},
        "model": {"sha256": record["checkpoint"]["sha256"]},
        "data": {"fingerprint": record["track"]["data_fingerprint"]},
        "norm": record["track"]["norm"],
        "eps": record["track"]["eps"],
        "n_examples": record["eval"]["n_examples"],
        "settings": {"cw": {**record["eval"]["settings"]["cw"], "seed": 0}},
    }
    filed = copy / f"{copy.name}.eval.json"
    filed.write_text(json.dumps(later))
    result = ardbench.verify(copy, threads=1, write=False)
    assert result["state"] == "verified", result["note"]
    assert result["columns"]["cw"]["delta_points"] == 0
    later["accuracy"]["cw"] = cw + 5 / 64
    filed.write_text(json.dumps(later))
    result = ardbench.verify(copy, threads=1, write=False)
    assert result["state"] == "failed" and result["reason"].startswith("cw does not match")


def _unpublished_copy(run: Path, runs: Path, run_id: str, change=None) -> Path:
    """The committed record of an earlier run of the same config whose weights were never
    published (what ``--replaces`` is for)."""
    from ardbench.results.records import write_record

    record = json.loads((run / "record.json").read_text())
    record["run_id"] = run_id
    record["checkpoint"].pop("weights")
    record["eval"]["accuracy"]["clean"] -= 2 / 64
    if change:
        change(record)
    return write_record(runs / "old" / f"{run_id}.json", record)


def test_a_re_run_replaces_a_record_without_weights(copy, tmp_path, capsys):
    lb = tmp_path / "lb"
    runs = lb / "runs"
    old = _unpublished_copy(copy, runs, "natural-small_cnn-s0-old")
    beside = old.parent / "natural-small_cnn-s0-old.verify.json"
    beside.write_text('{"state": "failed"}')
    argv = ["leaderboard", "--runs", str(runs), "--out", str(lb), "--add", str(copy)]
    other = _unpublished_copy(
        copy, runs, "natural-small_cnn-s0-other", lambda r: r["student"].update(arch="x")
    )
    assert main([*argv, "--replaces", str(other)]) != 0
    assert "another experiment (student differ" in capsys.readouterr().err
    other.unlink()
    assert main([*argv, "--replaces", str(old)]) == 0
    assert "re-run of natural-small_cnn-s0-old" in capsys.readouterr().out
    assert not old.exists() and not beside.exists()
    (result,) = runs.rglob("*.verify.json")
    data = json.loads(result.read_text())
    assert data["state"] == "verified" and data["replaces"]["run_id"] == "natural-small_cnn-s0-old"
    assert data["replaces"]["delta_points"]["clean"] == 2
    assert data["replaces"]["delta_points"]["pgd20"] == 0
    assert data["weights"]["path"] == str(lb / "weights" / f"{copy.name}.safetensors")
    table = next(p for p in lb.rglob("*.md") if p.name != "README.md").read_text()
    assert "| re-run of natural-small_cnn-s0-old (made at " in table
    # checked again later: the result is rewritten, what it replaced stays said
    record = next(p for p in runs.rglob("*.json") if p != result)
    assert main(["verify", str(record), "--threads", "1"]) == 0
    assert json.loads(result.read_text())["replaces"] == data["replaces"]


def test_verify_all_checks_what_a_change_adds_first_within_a_budget(tmp_path, capsys):
    """CI's time-boxed check: records in the order git added them, newest (and untracked)
    first, whatever date a record claims; records naming no published weights are listed
    as unverified by --published-only, not failed."""
    import subprocess

    from ardbench.results.records import example_record, write_record

    runs = tmp_path / "runs"

    def add(run_id: str, weights: bool = True) -> None:
        rec = example_record(run_id=run_id)
        if weights:
            rec["checkpoint"]["weights"] = {"format": "safetensors", "sha256": "0" * 64}
        write_record(runs / f"{run_id}.json", rec)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    for rid in ("z-oldest", "a-middle"):
        add(rid)
        git("add", "-A")
        git("commit", "-qm", rid)
    add("m-untracked")
    add("b-no-weights", weights=False)
    argv = ["verify", "--all", "--runs", str(runs), "--no-write", "--budget", "0"]
    assert main([*argv, "--newest-first", "--published-only"]) == 0
    out = capsys.readouterr().out
    assert "unverified b-no-weights: no published weights" in out
    assert "3 record(s) not checked: m-untracked, a-middle, z-oldest" in out


def test_published_weights_swapped_after_verification_fail_in_the_table(copy, run_dir, tmp_path):
    """The tables hash the published weights again: a verified row whose weights file was
    swapped afterwards shows failed, one whose file is gone shows unverified."""
    from safetensors.torch import save_file

    from ardbench.results.leaderboard import collect_records
    from ardbench.results.render import render_leaderboard
    from ardbench.results.verified import collect_verifications

    lb = tmp_path / "lb"
    argv = ["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb), "--add", str(copy)]
    assert main(argv) == 0

    def cell() -> str:
        records = collect_records(lb / "runs")
        files = render_leaderboard(records, collect_verifications(lb / "runs", records))
        text = next(t for name, t in files.items() if "__" in name)
        row = next(x for x in text.splitlines() if x.startswith("| ") and "| natural |" in x)
        return row.split(" | ")[-2]

    assert cell() == "✓ 1/1 re-evaluated"
    published = lb / "weights" / f"{copy.name}.safetensors"
    torch.manual_seed(7)
    save_file(build_arch("small_cnn", 10).state_dict(), str(published))
    assert cell().startswith("✗ failed 1/1: weights do not match")
    published.unlink()
    for name in ("model.safetensors", "model.pt"):  # nor in the run directory
        (copy / name).unlink()
    original = run_dir / "model.pt"  # nor at the record's checkpoint path
    original.rename(run_dir / "moved.pt")
    try:
        assert cell() == "unverified"
    finally:
        (run_dir / "moved.pt").rename(original)
