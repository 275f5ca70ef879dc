"""Records -> one tidy pandas row per run: what ``ardbench.results(path)`` returns.

Unlike :func:`ardbench.results.tables.records_frame` (the leaderboard's internal frame, keyed
for grouping), this frame is for people: readable names, one column per metric, accuracies as
fractions in [0, 1] (NaN where a column was not evaluated), the later evaluation's columns
(``ardbench leaderboard --attach``) merged in and named in ``later_columns``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .grouping import eval_split, format_eps, teacher_label
from .schema import COLUMNS
from .tables import _recipe_label

__all__ = ["TIDY_COLUMNS", "tidy_frame"]

TIDY_COLUMNS = (
    "run_id",
    "method",
    "recipe",
    "protocol",
    "teacher",
    "student",
    "seed",
    *COLUMNS,
    "epochs",
    "dataset",
    "norm",
    "eps",
    "n_examples",
    "split",
    "later_columns",
    "aa_unreliable",
    "teacher_spec",
    "teacher_sha256",
    "student_spec",
    "recipe_source",
    "protocol_modified",
    "config_hash",
    "recipe_hash",
    "wall_time_s",
    "finished_at",
    "code",
    "run_dir",
)


def _recipe_hash(config: Mapping[str, Any]) -> str | None:
    from ..protocols import RunConfig

    try:
        return RunConfig.from_dict(dict(config)).recipe_hash()
    except Exception:  # a record of another version whose config no longer resolves
        return None


def _run_dir(record: Mapping[str, Any]) -> str | None:
    path = (record.get("checkpoint") or {}).get("path")
    if not path:
        return None
    parent = Path(path).parent
    return str(parent) if (parent / "config.json").is_file() else None


def _protocol_label(r: Mapping[str, Any]) -> str | None:
    """The protocol as the leaderboard names it: a modified one with its identity
    (``demo+2e998dbf``), so 1-, 2- and 12-epoch runs of ``demo`` do not share a name
    (issue 27)."""
    from .grouping import record_protocol

    protocol = r.get("protocol") or {}
    try:
        return record_protocol(r).label
    except (KeyError, TypeError, ValueError):  # a record too old or odd for an identity
        return protocol.get("name") or (r.get("config") or {}).get("protocol")


def _row(r: Mapping[str, Any]) -> dict[str, Any]:
    ev, track = r["eval"], r["track"]
    teacher = r.get("teacher") or {}
    protocol = r.get("protocol") or {}
    code = r.get("code_version") or {}
    row: dict[str, Any] = {
        "run_id": r["run_id"],
        "method": r["method"]["name"],
        "recipe": _recipe_label(r.get("recipe")),
        "protocol": _protocol_label(r),
        "teacher": teacher_label(teacher.get("spec")) if teacher else None,
        "student": r["student"]["arch"],
        "seed": r["seed"],
    }
    acc = ev.get("accuracy") or {}
    for col in COLUMNS:
        v = acc.get(col)
        row[col] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    row.update(
        {
            "epochs": r["epochs"],
            "dataset": track["dataset"],
            "norm": track["norm"],
            "eps": format_eps(track["eps"]),
            "n_examples": ev["n_examples"],
            "split": eval_split(r),
            "later_columns": ",".join((ev.get("later_eval") or {}).get("columns") or ()),
            "aa_unreliable": bool(ev.get("aa_unreliable", False)),
            "teacher_spec": teacher.get("spec"),
            "teacher_sha256": teacher.get("sha256"),
            "student_spec": r["student"]["spec"],
            "recipe_source": r.get("recipe"),
            "protocol_modified": protocol.get("modified"),
            "config_hash": r["method"].get("config_hash"),
            "recipe_hash": _recipe_hash(r.get("config") or {}),
            "wall_time_s": r.get("wall_time_s"),
            "finished_at": r.get("finished_at"),
            "code": (code.get("git_sha") or "")[:7] + ("+dirty" if code.get("dirty") else "")
            or code.get("version"),
            "run_dir": _run_dir(r),
        }
    )
    return row


def tidy_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record (sorted by run id) with :data:`TIDY_COLUMNS`."""
    rows = [_row(r) for r in sorted(records, key=lambda r: r["run_id"])]
    return pd.DataFrame(rows, columns=list(TIDY_COLUMNS))
