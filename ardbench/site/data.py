"""What the site is built from: the records (read by the leaderboard's own loader, later
evaluations merged), the tables :func:`ardbench.results.tables.build_tables` makes of them,
and per run its epoch log and verification result where they are on file.

Where the files are looked for (``run_id`` = the record's run id):

- epoch log: ``<run_id>.log.jsonl`` anywhere under the records' folder, or ``log.jsonl`` in a
  folder named ``<run_id>`` there or directly under any ``--logs`` folder (the ``runs/``
  folder that ``ardbench run`` writes);
- verification (``ardbench verify``, :mod:`ardbench.results.verify`): ``<run_id>.verify.json``
  beside the record, or ``verify.json`` in the run's folder; ``partial`` shows as unverified
  with its note, and a ``verified`` result whose ``record_digest`` no longer matches the
  record shows as failed.

A log or verification file that cannot be read is not an error: the run page says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..results.leaderboard import collect_records
from ..results.schema import RecordModel
from ..results.tables import Row, Table, build_tables
from ..results.verified import (
    FAILED,
    NONE,
    PARTIAL,
    UNVERIFIED,
    UNVERIFIED_NOTE,
    VERIFIED,
    Verification,
    collect_verifications,
    read_verification,
)

__all__ = [
    "RunInfo",
    "SiteData",
    "Verification",
    "load_site_data",
    "read_epoch_log",
    "method_page",
    "row_verification",
    "run_page",
    "table_page",
]


@dataclass
class RunInfo:
    model: RecordModel
    record: dict[str, Any]
    log: list[dict[str, Any]] = field(default_factory=list)
    log_note: str = ""  # why there are no curves
    verification: Verification = Verification(UNVERIFIED, UNVERIFIED_NOTE)  # noqa: RUF009
    tables: list[Table] = field(default_factory=list)


@dataclass
class SiteData:
    tables: list[Table]
    runs: dict[str, RunInfo]

    def methods(self) -> list[str]:
        return sorted({r.model.method.name for r in self.runs.values()})


def read_epoch_log(path: Path) -> tuple[list[dict[str, Any]], str]:
    """(epoch rows, problem): rows whose ``epoch`` is an integer, in file order; a torn last
    line (a killed writer) is dropped; anything else unreadable is reported, not raised."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"log not readable ({type(exc).__name__})"
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines) - 1:
                break
            return [], f"log line {i + 1} is not JSON"
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            return [], f"log line {i + 1} is not an epoch line"
        rows.append(row)
    return rows, ""


def _read_verification(path: Path, record: Mapping[str, Any]) -> Verification:
    """The leaderboard's reading (:func:`ardbench.results.verified.read_verification`); the
    site shows a partial check as unverified, with its note."""
    return _site_state(read_verification(path, record))


def _site_state(v: Verification) -> Verification:
    return replace(v, state=UNVERIFIED) if v.state == PARTIAL else v


def _index_files(runs_dir: Path, log_dirs: Sequence[Path], ids: set[str]) -> dict[str, Path]:
    """{"log:<id>" | "verify:<id>": path} for the runs in ``ids`` (first found wins)."""
    found: dict[str, Path] = {}
    for path in sorted(runs_dir.rglob("*")) if runs_dir.is_dir() else []:
        name = path.name
        if name.endswith(".log.jsonl") and name[: -len(".log.jsonl")] in ids:
            found.setdefault("log:" + name[: -len(".log.jsonl")], path)
        elif name.endswith(".verify.json") and name[: -len(".verify.json")] in ids:
            found.setdefault("verify:" + name[: -len(".verify.json")], path)
        elif name in ("log.jsonl", "verify.json") and path.parent.name in ids:
            kind = "log" if name == "log.jsonl" else "verify"
            found.setdefault(f"{kind}:{path.parent.name}", path)
    for folder in log_dirs:
        for rid in sorted(ids):
            path = folder / rid / "log.jsonl"
            if path.is_file():
                found.setdefault(f"log:{rid}", path)
    return found


NO_LOG = (
    "No epoch log on file: the leaderboard keeps the records only. Build with "
    "--logs RUNS_DIR (the folder ardbench run wrote) to draw the curves."
)


def load_site_data(runs_dir: str | Path, log_dirs: Sequence[str | Path] = ()) -> SiteData:
    """Every record under ``runs_dir``, its tables, logs and verification results."""
    runs_dir = Path(runs_dir)
    records = collect_records(runs_dir)  # typed, validated once
    verifications = collect_verifications(runs_dir, records)
    tables = build_tables(records, verifications)
    ids = {r.run_id for r in records}
    files = _index_files(runs_dir, [Path(d) for d in log_dirs], ids)
    runs: dict[str, RunInfo] = {}
    for model in records:
        rid, record = model.run_id, model.to_dict()  # the JSON as stored (downloads)
        info = RunInfo(model=model, record=record)
        if f"log:{rid}" in files:
            info.log, problem = read_epoch_log(files[f"log:{rid}"])
            info.log_note = problem
        else:
            info.log_note = NO_LOG
        checked = verifications.get(rid, NONE)
        if checked is not NONE:  # beside the record: the tables' own reading
            info.verification = _site_state(checked)
        elif f"verify:{rid}" in files:  # verify.json in a run's folder
            info.verification = _read_verification(files[f"verify:{rid}"], record)
        runs[rid] = info
    for t in tables:
        for row in t.rows:
            for rid in row.run_ids:
                if not any(x is t for x in runs[rid].tables):
                    runs[rid].tables.append(t)
    return SiteData(tables, runs)


def table_page(t: Table) -> str:
    """The table's page, relative to the site root (table names are slugs: see grouping)."""
    return "tables/" + t.name.replace("/", "--") + ".html"


def run_page(run_id: str) -> str:
    return f"runs/{run_id}.html"  # run ids are validated ids (schema.ID_PATTERN)


def method_page(name: str) -> str:
    return f"methods/{name}.html"  # method names are validated snake_case


def row_verification(row: Row, runs: Mapping[str, RunInfo]) -> Verification:
    """A row is failed when any of its runs failed, verified when all were, else unverified."""
    states = [runs[rid].verification.state for rid in row.run_ids]
    if FAILED in states:
        return Verification(FAILED, f"{states.count(FAILED)} of {len(states)} runs failed")
    if states and all(s == VERIFIED for s in states):
        return Verification(VERIFIED, "every run re-evaluated under its own protocol")
    done = states.count(VERIFIED)
    note = f"{done} of {len(states)} runs verified. " if done else ""
    return Verification(UNVERIFIED, note + UNVERIFIED_NOTE)


def finite(value: Any) -> float | None:
    """A plain finite number from a log or record value, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
