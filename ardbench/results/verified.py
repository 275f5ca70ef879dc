"""What a record's verification result (``<run_id>.verify.json``, written by ``ardbench
verify`` or ``leaderboard --add``) says about it, read back for the tables and the site.

A result counts only for the claim it checked: its ``record_digest`` must be the record's own
claim (:func:`~ardbench.results.verify.claim_digest`) and every column it compared must still
carry the value it compared (a column attached later, e.g. AutoAttack from an ``.eval.json``,
is outside the digest; its value is checked here). A result that no longer matches is
``failed``: the record or its later evaluation changed after it was verified. A result that
cannot be read says so and counts as ``unverified``, never as an error.

States: ``verified`` (every column the record claims re-evaluated and agreeing, or re-trained
within the stated seed std), ``partial`` (a quick check on fewer points or columns agreed, or
a re-training of a one-seed row), ``unverified`` (no result, or one that states no verdict:
e.g. ``leaderboard --add --no-verify``), ``failed``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import read_json_bounded
from .records import RecordLike, find_records
from .verify import FAILED, PARTIAL, VERIFIED, claim_digest, record_json, verify_result_path

__all__ = [
    "FAILED",
    "PARTIAL",
    "UNVERIFIED",
    "VERIFIED",
    "Verification",
    "collect_verifications",
    "read_verification",
]

UNVERIFIED = "unverified"
UNVERIFIED_NOTE = (
    "No verification on file (ardbench verify writes one beside the record): the numbers are "
    "the run's own claim."
)
_MAX_BYTES = 1 << 20  # a result is a few KB; a larger file is not one


@dataclass(frozen=True)
class Verification:
    """One run's verification as the tables show it."""

    state: str  # verified | partial | unverified | failed
    note: str
    how: str = ""  # re-evaluated | re-trained | "" (none)
    columns: tuple[str, ...] = ()  # the columns it compared and found in agreement
    replaced: str = ""  # the summary of the record this run re-ran (leaderboard --replaces)

    @property
    def ranks(self) -> bool:
        """A failed record never ranks."""
        return self.state != FAILED


NONE = Verification(UNVERIFIED, UNVERIFIED_NOTE)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _judge(data: Mapping[str, Any], record: Mapping[str, Any], name: str) -> Verification:
    state, how, note = data.get("state"), _text(data, "how"), _text(data, "note")
    if state not in (VERIFIED, PARTIAL, FAILED):
        return Verification(UNVERIFIED, note or f"{name} states no verdict", how)
    if state == FAILED:
        return Verification(FAILED, _text(data, "reason") or note or "verification failed", how)
    if data.get("run_id") != record.get("run_id"):
        return Verification(FAILED, f"{name} is the verification of another run")
    if not isinstance(data.get("record_digest"), str):
        return Verification(UNVERIFIED, f"{name} names no record_digest: it checks no claim")
    if data["record_digest"] != claim_digest(record):
        return Verification(FAILED, "the record changed after it was verified", how)
    accuracy = (record.get("eval") or {}).get("accuracy") or {}
    compared = data.get("columns")
    agreed = []
    for col, row in sorted(compared.items() if isinstance(compared, dict) else ()):
        claimed = row.get("record") if isinstance(row, dict) else None
        if not _same(claimed, accuracy.get(col)):
            return Verification(
                FAILED, f"{col} changed after it was verified (a later evaluation edited?)", how
            )
        if row.get("agree", True) is not False:
            agreed.append(col)
    block = data.get("replaces")
    replaced = _text(block, "summary") if isinstance(block, dict) else ""
    return Verification(str(state), note, how, tuple(agreed), replaced)


def _weights_now(data: Mapping[str, Any], rec: Mapping[str, Any], record_path: Path) -> str:
    """Why the weights on file are not the ones the result verified ("" when they are): a
    result that checked a file must still find that file, unchanged, where verify looks."""
    from .weights import WeightsError, find_weights

    checked = data.get("weights")
    sha = checked.get("sha256") if isinstance(checked, dict) else None
    if not isinstance(sha, str):
        return ""
    try:  # the file must have the hash the record names (and the claim digest binds that)
        find_weights(rec, record_path)
    except WeightsError as exc:
        return str(exc)
    return ""


def read_verification(
    path: Path, record: RecordLike | Mapping[str, Any], record_path: Path | None = None
) -> Verification:
    """The verification in ``path`` judged against ``record`` (merged with its later
    evaluation, as the tables show it); :data:`NONE` when there is no file. With
    ``record_path``, the weights it verified must still be on file (a swapped weights file
    turns it ``failed``; weights not here leave it ``unverified``)."""
    rec = record_json(record)
    if not path.exists():
        return NONE
    try:  # a result is a few KB: the project's bounded reader (size, depth, UTF-8)
        data = read_json_bounded(path, limit=_MAX_BYTES)
    except (OSError, ValueError):
        return Verification(UNVERIFIED, f"{path.name} is not readable JSON")
    if not isinstance(data, dict):
        return Verification(UNVERIFIED, f"{path.name} is not a JSON object")
    judged = _judge(data, rec, path.name)
    if record_path is not None and judged.state in (VERIFIED, PARTIAL):
        problem = _weights_now(data, rec, record_path)
        if problem.startswith("weights missing"):
            return Verification(UNVERIFIED, f"checked once, but {problem}", judged.how)
        if problem:
            return Verification(FAILED, problem, judged.how)
    return judged


def collect_verifications(
    root: str | Path, records: Iterable[RecordLike]
) -> dict[str, Verification]:
    """{run_id: verification} for ``records`` (as the tables show them, later evaluations
    merged), from the ``<run_id>.verify.json`` beside each record file under ``root``."""
    by_id = {record_json(r)["run_id"]: r for r in records}
    out: dict[str, Verification] = {}
    root = Path(root)
    if not root.exists():
        return out
    for path, found in find_records(root):
        rid = found.run_id
        if rid in by_id and rid not in out:
            out[rid] = read_verification(verify_result_path(path, rid), by_id[rid], path)
    return out
