"""The committed leaderboard is checkable: every record of a live protocol (registered, not
retired, its registered values) publishes its weights in ``leaderboard/weights/`` with the
sha256 it names, and its verification on file still holds for it (the claim digest, each
compared column, the weights' hash). CI re-evaluates them too (``.ci/run``, time-boxed)."""

from __future__ import annotations

from pathlib import Path

from ardbench.io import file_sha256
from ardbench.protocols import PROTOCOLS
from ardbench.results.leaderboard import collect_records
from ardbench.results.records import find_records
from ardbench.results.verified import FAILED, PARTIAL, VERIFIED, collect_verifications

LEADERBOARD = Path(__file__).resolve().parents[1] / "leaderboard"


def _live(record) -> bool:
    ref = record.protocol
    if ref is None or ref.modified or ref.name not in PROTOCOLS:
        return False
    return not PROTOCOLS.get(ref.name).retired


def test_every_live_record_publishes_its_weights():
    live = [r for _, r in find_records(LEADERBOARD / "runs") if _live(r)]
    assert live, "no record of a live protocol: the small track's records are missing"
    problems = []
    for r in live:
        named = r.checkpoint.extra("weights") or {}
        path = LEADERBOARD / "weights" / f"{r.run_id}.safetensors"
        if not named.get("sha256"):
            problems.append(f"{r.run_id}: names no published weights")
        elif not path.is_file():
            problems.append(f"{r.run_id}: {path.name} not in leaderboard/weights")
        elif file_sha256(path) != named["sha256"]:
            problems.append(f"{r.run_id}: {path.name} is not the file the record names")
    assert not problems, "\n".join(problems)


def test_every_live_record_is_verified_and_nothing_committed_failed():
    runs = LEADERBOARD / "runs"
    records = collect_records(runs)
    found = collect_verifications(runs, records)
    failed = [f"{rid}: {v.note}" for rid, v in found.items() if v.state == FAILED]
    assert not failed, "\n".join(failed)
    unchecked = [
        r.run_id for r in records if _live(r) and found[r.run_id].state not in (VERIFIED, PARTIAL)
    ]
    assert not unchecked, f"live records without a verification that holds: {unchecked}"
    # what --add leaves beside a record names no machine's folders
    for path in runs.rglob("*.verify.json"):
        text = path.read_text()
        assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, path
