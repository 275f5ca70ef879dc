"""``leaderboard --add NEW --replaces OLD``: a re-run takes the place of a record whose weights
were never published.

Records are immutable, and a row of the leaderboard should be checkable: a committed record
without published weights can only be re-trained (``ardbench verify --retrain``). Its re-run,
with weights, replaces it: the new record must be the same experiment (method, seed, protocol,
data, teacher, student); the old record and the files filed beside it (its later evaluation,
its verification) leave the runs folder (version control keeps them), and the new record's
verification result says what it replaced and how far the re-run landed from it, in points of
the evaluated set, column by column. The table's notes show that line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ArdbenchError
from .later_eval import later_eval_path, load_later_eval, merge_later_eval
from .records import load_record
from .verify import claim_digest, record_json, verify_result_path

__all__ = ["check_replacement", "remove_replaced", "replacement_block"]

# what must be equal for a re-run to stand for the record it replaces
_SAME: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("method", lambda r: r["method"]["name"]),
    ("seed", lambda r: r["seed"]),
    ("protocol", lambda r: (r.get("protocol") or {}).get("name")),
    ("data fingerprint", lambda r: r["track"]["data_fingerprint"]),
    ("teacher", lambda r: (r.get("teacher") or {}).get("sha256")),
    ("student", lambda r: r["student"]["arch"]),
    ("evaluated points", lambda r: r["eval"]["n_examples"]),
)


def check_replacement(new: Mapping[str, Any], old_path: Path, runs_dir: Path) -> dict[str, Any]:
    """The old record at ``old_path`` (inside ``runs_dir``), checked as one ``new`` may
    replace; raises :class:`ArdbenchError` naming what differs."""
    old_path = Path(old_path)
    try:
        old_path.resolve().relative_to(Path(runs_dir).resolve())
    except ValueError:
        raise ArdbenchError(
            f"--replaces {old_path}: not a record under {runs_dir} (only a committed record "
            "can be replaced)"
        ) from None
    record = load_record(old_path)
    later = later_eval_path(old_path, record.run_id)
    if later.is_file():  # its AutoAttack, say: the table showed it, the re-run lacks it
        record = merge_later_eval(record, load_later_eval(later), source=later)
    old = record_json(record)
    if old["run_id"] == new["run_id"]:
        raise ArdbenchError(f"--replaces {old_path}: that is the record being added")
    if (old.get("checkpoint") or {}).get("weights"):
        raise ArdbenchError(
            f"--replaces {old_path}: its weights are published; verify it instead "
            f"(ardbench verify {old_path})"
        )
    differ = [name for name, get in _SAME if get(old) != get(new)]
    if differ:
        raise ArdbenchError(
            f"--replaces {old_path}: the re-run {new['run_id']} is another experiment "
            f"({', '.join(differ)} differ)"
        )
    return old


def replacement_block(new: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """What the new record's verification result says about the record it replaced."""
    n = int(old["eval"]["n_examples"])
    then, now = old["eval"]["accuracy"], new["eval"]["accuracy"]
    later = set((old["eval"].get("later_eval") or {}).get("columns") or ())
    deltas = {c: round((now[c] - then[c]) * n) for c in sorted(then) if c in now}
    code = ((old.get("code_version") or {}).get("git_sha") or "")[:7] or "unknown code"
    shown = ", ".join(f"{c} {d:+d}" for c, d in deltas.items())
    return {
        "run_id": old["run_id"],
        "record_digest": claim_digest(old),
        "code": code,
        "accuracy": dict(then),
        "delta_points": deltas,
        "dropped_columns": sorted(c for c in then if c not in now or c in later),
        "summary": (
            f"re-run of {old['run_id']} (made at {code}; its weights were never published): "
            f"{shown} points of {n}"
        ),
    }


def remove_replaced(old_path: Path, run_id: str) -> list[Path]:
    """Remove the replaced record and what was filed beside it; the removed paths."""
    removed = []
    for path in (old_path, later_eval_path(old_path, run_id), verify_result_path(old_path, run_id)):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed
