"""Records -> one tidy pandas row per run: what ``ardbench.results(path)`` returns.

Unlike :func:`ardbench.results.tables.records_frame` (the leaderboard's internal frame, keyed
for grouping), this frame is for people: readable names, one column per metric, accuracies as
fractions in [0, 1] (NaN where a column was not evaluated), the later evaluation's columns
(``ardbench leaderboard --attach``) merged in and named in ``later_columns``.

``row_identity`` is the leaderboard's row (:func:`ardbench.results.grouping.row_identity`):
group by it to average exactly the runs one table row averages. ``recipe_hash`` (the older
name of the config part of it, :func:`ardbench.protocols.identity.row_hash`) is kept for
compatibility.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..protocols.eps import format_eps
from .grouping import record_protocol, row_identity, teacher_label
from .records import RecordLike, as_record
from .schema import COLUMNS, CodeVersion, Record
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
    "row_identity",
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


def _run_dir(record: Record) -> str | None:
    path = record.checkpoint.path
    if not path:
        return None
    parent = Path(path).parent
    return str(parent) if (parent / "config.json").is_file() else None


def _code(cv: CodeVersion) -> str | None:
    text = (cv.git_sha or "")[:7] + ("+dirty" if cv.dirty else "")
    return text or cv.version


def _identity_columns(r: Record) -> dict[str, Any]:
    """The hashes: the row identity the leaderboard groups by, and the older ones."""
    return {
        "row_identity": row_identity(r),
        "config_hash": r.method.config_hash,
        "recipe_hash": _recipe_hash(r.config),
    }


def _protocol_label(r: Record) -> str | None:
    """The protocol as the leaderboard names it: a modified one with its identity
    (``demo+2e998dbf``), so 1-, 2- and 12-epoch runs of ``demo`` do not share a name."""
    try:
        return record_protocol(r).label
    except (KeyError, TypeError, ValueError):  # a record too old or odd for an identity
        return r.protocol_name


def _row(r: Record) -> dict[str, Any]:
    ev, track, teacher = r.eval, r.track, r.teacher
    row: dict[str, Any] = {
        "run_id": r.run_id,
        "method": r.method.name,
        "recipe": _recipe_label(r.recipe),
        "protocol": _protocol_label(r),
        "teacher": teacher_label(teacher.spec) if teacher else None,
        "student": r.student.arch,
        "seed": r.seed,
    }
    for col in COLUMNS:
        v = ev.column(col)
        row[col] = math.nan if v is None else v
    row.update(
        {
            "epochs": r.epochs,
            "dataset": track.dataset,
            "norm": track.norm,
            "eps": format_eps(track.eps),
            "n_examples": ev.n_examples,
            "split": ev.split,
            "later_columns": ",".join(ev.later_columns),
            "aa_unreliable": ev.is_aa_unreliable,
            "teacher_spec": teacher.spec if teacher else None,
            "teacher_sha256": teacher.sha256 if teacher else None,
            "student_spec": r.student.spec,
            "recipe_source": r.recipe,
            "protocol_modified": r.protocol.modified if r.protocol else None,
            **_identity_columns(r),
            "wall_time_s": r.wall_time_s,
            "finished_at": r.finished_at,
            "code": _code(r.code_version),
            "run_dir": _run_dir(r),
        }
    )
    return row


def tidy_frame(records: Iterable[RecordLike]) -> pd.DataFrame:
    """One row per record (sorted by run id) with :data:`TIDY_COLUMNS`."""
    typed = sorted((as_record(r) for r in records), key=lambda r: r.run_id)
    return pd.DataFrame([_row(r) for r in typed], columns=list(TIDY_COLUMNS))
