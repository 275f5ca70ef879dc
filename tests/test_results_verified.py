"""Verification results in the tables (ardbench.results.verified): a verified run says how it
was checked and which columns were not; a failed or stale result never ranks; a result bound to
no claim verifies nothing."""

from __future__ import annotations

import copy
import json

import pytest

from ardbench.results.leaderboard import collect_records
from ardbench.results.records import example_record, write_record
from ardbench.results.render import render_leaderboard
from ardbench.results.verified import collect_verifications
from ardbench.results.verify import claim_digest


def _record(run_id: str, seed: int, acc: dict) -> dict:
    name = run_id.split("-")[0]
    config = copy.deepcopy(example_record()["config"])
    config["method"] = name
    config["train"]["seed"] = seed
    return example_record(
        run_id=run_id,
        seed=seed,
        config=config,
        method={"name": name, "unofficial": False, "teacher_in_attack": False},
        eval={"accuracy": acc, "n_examples": 1000},
    )


def _result(record: dict, state: str = "verified", **extra) -> dict:
    cols = {c: {"record": v, "agree": True} for c, v in record["eval"]["accuracy"].items()}
    return {
        "format": "ardbench-verify/1",
        "run_id": record["run_id"],
        "record_digest": claim_digest(record),
        "state": state,
        "how": "re-evaluated",
        "note": "re-evaluated",
        "columns": cols,
        **extra,
    }


def _table(runs) -> str:
    records = collect_records(runs)
    files = render_leaderboard(records, collect_verifications(runs, records))
    (text,) = [t for name, t in files.items() if name.endswith(".md") and "/" in name]
    return text


def _row(text: str, method: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("| ") and f"| {method} |" in x)
    return [c.strip() for c in line.strip("|").split("|")]


def _board(tmp_path, verify: dict[str, dict | str | None]):
    """Three rows (ard two seeds, kd, iad) with the given verification per run id."""
    runs = tmp_path / "runs"
    recs = [
        _record("ard-s0", 0, {"clean": 0.80, "pgd20": 0.45}),
        _record("ard-s1", 1, {"clean": 0.80, "pgd20": 0.46}),
        _record("kd-s0", 0, {"clean": 0.90, "pgd20": 0.30}),
        _record("iad-s0", 0, {"clean": 0.85, "pgd20": 0.60}),
    ]
    for r in recs:
        write_record(runs / f"{r['run_id']}.json", r)
        v = verify.get(r["run_id"])
        if v is not None:
            body = v if isinstance(v, str) else json.dumps(v)
            (runs / f"{r['run_id']}.verify.json").write_text(body)
    return runs, {r["run_id"]: r for r in recs}


def test_verified_runs_say_how_and_failed_rows_never_rank(tmp_path):
    recs = {
        r["run_id"]: r
        for r in [
            _record("ard-s0", 0, {"clean": 0.80, "pgd20": 0.45}),
            _record("ard-s1", 1, {"clean": 0.80, "pgd20": 0.46}),
            _record("iad-s0", 0, {"clean": 0.85, "pgd20": 0.60}),
        ]
    }
    failed = {"state": "failed", "reason": "pgd20 does not match: +40 points", "note": "x"}
    runs, _ = _board(
        tmp_path,
        {"ard-s0": _result(recs["ard-s0"]), "ard-s1": _result(recs["ard-s1"]), "iad-s0": failed},
    )
    text = _table(runs)
    ard, kd, iad = _row(text, "ard"), _row(text, "kd"), _row(text, "iad")
    assert ard[0] == "1" and ard[-2] == "✓ 2/2 re-evaluated"
    assert kd[0] == "2" and kd[-2] == "unverified"
    # the strongest numbers, but failed: no rank, listed last
    assert iad[0] == "✗" and iad[-2].startswith("✗ failed 1/1: pgd20 does not match")
    assert text.index("| iad |") > text.index("| kd |")
    assert "This table's runs: 2 verified, 1 unverified, 1 failed." in text


def test_a_record_or_a_column_changed_after_verification_is_failed(tmp_path):
    honest = _record("iad-s0", 0, {"clean": 0.85, "pgd20": 0.60})
    stale = _result(honest)
    runs, _ = _board(tmp_path, {"iad-s0": stale})
    # raise the record's own number after it was verified
    path = runs / "iad-s0.json"
    data = json.loads(path.read_text())
    data["eval"]["accuracy"]["pgd20"] = 0.70
    path.write_text(json.dumps(data))
    assert _row(_table(runs), "iad")[-2] == "✗ failed 1/1: the record changed after it was verified"
    # a column outside the claim digest (a later evaluation's AA) edited after verification
    path.write_text(json.dumps(honest))
    stale["columns"]["aa"] = {"record": 0.50, "agree": True}
    (runs / "iad-s0.verify.json").write_text(json.dumps(stale))
    cell = _row(_table(runs), "iad")[-2]
    assert cell.startswith("✗ failed") and "aa changed after it was verified" in cell


def test_results_that_bind_no_claim_verify_nothing(tmp_path):
    rec = _record("iad-s0", 0, {"clean": 0.85, "pgd20": 0.60})
    no_digest = {k: v for k, v in _result(rec).items() if k != "record_digest"}
    for body, cell in [
        (no_digest, "unverified"),
        ("{not json", "unverified"),
        ("[1, 2]", "unverified"),
        ({**_result(rec), "run_id": "someone-else"}, "✗ failed 1/1: iad-s0.verify.json is the "),
        ({**_result(rec), "state": "great"}, "unverified"),
    ]:
        runs, _ = _board(tmp_path / str(abs(hash(str(body)))), {"iad-s0": body})
        assert _row(_table(runs), "iad")[-2].startswith(cell), body


def test_columns_not_re_evaluated_are_named(tmp_path):
    rec = _record("iad-s0", 0, {"clean": 0.85, "pgd20": 0.60, "aa": 0.5})
    result = _result(rec)
    del result["columns"]["aa"]  # e.g. verify --all --columns clean,fgsm,pgd20,cw
    runs, _ = _board(tmp_path, {})
    (runs / "iad-s0.json").unlink()
    write_record(runs / "iad-s0.json", rec)
    (runs / "iad-s0.verify.json").write_text(json.dumps(result))
    assert _row(_table(runs), "iad")[-2] == "✓ 1/1 re-evaluated; not re-evaluated: AA"
    # a quick check (fewer points): partial, said so
    (runs / "iad-s0.verify.json").write_text(json.dumps({**result, "state": "partial"}))
    assert _row(_table(runs), "iad")[-2] == "◐ 1/1 re-evaluated (1 partial); not re-evaluated: AA"


def test_retrain_judges_by_the_larger_of_the_rows_and_the_pooled_seed_std(tmp_path):
    """Three seeds that agree by chance do not make a re-run's distance look larger."""
    from ardbench.results.retrain import row_spread

    runs = tmp_path / "runs"
    recs = [
        _record("ard-s0", 0, {"clean": 0.500}),
        _record("ard-s1", 1, {"clean": 0.501}),
        _record("kd-s0", 0, {"clean": 0.40}),
        _record("kd-s1", 1, {"clean": 0.42}),
    ]
    for r in recs:
        write_record(runs / f"{r['run_id']}.json", r)
    own, seeds, pooled = row_spread(recs[0], runs)
    assert seeds == 2
    assert own["clean"] == pytest.approx(0.001 / 2**0.5)
    assert pooled["clean"] == pytest.approx(((0.001**2 + 0.02**2) / 2 / 2) ** 0.5)
