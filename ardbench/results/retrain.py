"""``ardbench verify --retrain``: train the record's config again and say how far the new run
lands from the row, in units of the row's seed std.

Retraining checks a distribution, not bits (DESIGN.md, "Trust"): the same code, config and
seed on another machine of the same kind landed 1-2 seed std away, two re-runs on one machine
agreed bitwise. A re-run within :data:`RETRAIN_Z` std of the record in every column verifies
it (``how: re-trained``); beyond that it fails; a row of one seed has no std, so the result is
``partial`` and gives the differences in points. The std is the larger of the row's own and the
pooled seed std of the rows beside it (as the tables' ranks take it,
:mod:`ardbench.results.ranks`): three seeds can understate a spread by chance (a PGD-AT row's
clean std was 0.26 points over three seeds, the track's pooled 0.9).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .verify import (
    FAILED,
    PARTIAL,
    VERIFIED,
    claim_digest,
    portable_path,
    record_json,
    write_result,
)

__all__ = ["RETRAIN_Z", "retrain_record", "row_spread"]

RETRAIN_Z = 3.0


def _row_key(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    from .records import protocol_hash

    teacher = rec.get("teacher") or {}
    return (
        protocol_hash(rec),
        rec["track"]["data_fingerprint"],
        teacher.get("sha256"),
        rec["student"]["arch"],
    )


def _spread(runs: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{column: sample std} over runs (the columns every run has); empty under two runs."""
    if len(runs) < 2:
        return {}
    cols = set.intersection(*(set(a) for a in runs.values()))
    return {c: statistics.stdev(a[c] for a in runs.values()) for c in sorted(cols)}


def row_spread(
    rec: Mapping[str, Any], rows_dir: Path
) -> tuple[dict[str, float], int, dict[str, float]]:
    """({column: sample std over the row's seeds}, number of runs, {column: pooled seed std of
    the multi-seed rows under ``rows_dir``}) for the row ``rec`` belongs to (one run per seed)."""
    from .records import find_records

    key = _row_key(rec)
    rows: dict[Any, dict[str, Any]] = {}
    for _, found in find_records(rows_dir):
        other = record_json(found)
        rows.setdefault(_row_key(other), {})[other["run_id"]] = other["eval"]["accuracy"]
    runs = rows.setdefault(key, {})
    runs.setdefault(rec["run_id"], rec["eval"]["accuracy"])
    sums: dict[str, float] = {}
    dofs: dict[str, int] = {}
    for members in rows.values():
        for c, sd in _spread(members).items():
            sums[c] = sums.get(c, 0.0) + (len(members) - 1) * sd**2
            dofs[c] = dofs.get(c, 0) + len(members) - 1
    pooled = {c: (sums[c] / dofs[c]) ** 0.5 for c in sums}
    return _spread(runs), len(runs), pooled


def _warnings(rec: Mapping[str, Any]) -> list[str]:
    """Where this checkout differs from the one that made the record (the re-run then tests
    the claim under other code, which the result says)."""
    from ..methods import get_method
    from .provenance import code_version, method_source_sha256

    out = []
    then = (rec.get("code_version") or {}).get("git_sha")
    now = code_version(()).get("git_sha")
    if then and now and then != now:
        out.append(f"code version differs: the record was made at {then[:12]}, this is {now[:12]}")
    source = (rec.get("method") or {}).get("source_sha256")
    here = method_source_sha256(get_method(rec["method"]["name"]))
    if source and here and source != here:
        out.append(f"the method's source differs from the record's ({source[:12]} vs {here[:12]})")
    return out


def retrain_record(
    record: Any,
    record_path: str | Path,
    *,
    runs_dir: str | Path = "runs",
    rows_dir: str | Path | None = None,
    threads: int | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Re-train ``record``'s config into ``runs_dir`` and judge the new run against the row
    (records under ``rows_dir``, default the record's folder)."""
    from .. import api
    from ..protocols import RunConfig

    rec = record_json(record)
    record_path = Path(record_path)
    started = time.perf_counter()
    warnings = _warnings(rec)
    cfg = RunConfig.from_dict(dict(rec["config"]), where=f"{record_path} config")
    run = api.train_config(cfg, runs=runs_dir, progress=False, threads=threads)
    made: Any = run.record or {}  # the new run's record (typed, with dict access)
    new = made["eval"]["accuracy"]
    spread, seeds, pooled = row_spread(rec, Path(rows_dir) if rows_dir else record_path.parent)
    n = int(rec["eval"]["n_examples"])
    cols: dict[str, dict[str, Any]] = {}
    for c, claimed in rec["eval"]["accuracy"].items():
        if c not in new:
            continue
        own = spread.get(c)
        std = max(own, pooled.get(c, 0.0)) if own else None
        z = (new[c] - claimed) / std if std else None
        cols[c] = {
            "record": claimed,
            "re_run": new[c],
            "delta_points": round((new[c] - claimed) * n),
            "row_std": own,
            "pooled_std": pooled.get(c),
            "z": None if z is None else round(z, 3),
        }
    far = [c for c, r in cols.items() if r["z"] is not None and abs(r["z"]) > RETRAIN_Z]
    if far:
        state, note = (
            FAILED,
            f"re-trained run lands {cols[far[0]]['z']:+.2f} seed std away in {far[0]}",
        )
    elif not spread:
        state = PARTIAL
        note = (
            f"re-trained; the row has {seeds} seed, so no std to judge by (differences in points)"
        )
    else:
        state = VERIFIED
        note = (
            f"re-trained: every column within {RETRAIN_Z:g} seed std of the row (the larger of "
            "its own and the pooled)"
        )
    out = {
        "format": "ardbench-verify/1",
        "run_id": rec["run_id"],
        "record": portable_path(record_path),
        "record_digest": claim_digest(rec),
        "state": state,
        "how": "re-trained",
        "note": note,
        **({"reason": note} if state == FAILED else {}),
        "re_run": str(run.directory),
        "row_seeds": seeds,
        "threshold_std": RETRAIN_Z,
        "columns": cols,
        "warnings": warnings,
        "code_version": made.get("code_version"),
        "record_code_version": rec.get("code_version"),
        "hardware": made.get("hardware"),
        "record_hardware": rec.get("hardware"),
        "versions": made.get("versions"),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if write:
        write_result(record_path, rec["run_id"], out)
    return out
