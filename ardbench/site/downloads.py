"""The downloads: each table as CSV and JSON (its rows as build_tables aggregates them), and
one JSON of every table and every record. Byte-stable: sorted keys, fixed float formats in
the CSV, ``\\n`` line ends."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from ..results.schema import COLUMNS
from ..results.tables import Row, Table
from .data import SiteData, row_verification
from .table_page import markdown_parts
from .titles import dataset_name, retired, teacher_name

__all__ = ["all_json", "table_csv", "table_json"]


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 4)


def _row_dict(row: Row, rank: str, data: SiteData) -> dict[str, Any]:
    return {
        "rank": rank,
        "method": row.method,
        "recipe": row.recipe,
        "recipe_cell": row.recipe_cell,
        "checkpoint": row.checkpoint,
        "protocol_hash": row.protocol,
        "runs": row.runs,
        "run_ids": list(row.run_ids),
        "seeds": list(row.seeds),
        "epochs": list(row.epochs),
        "n_examples": list(row.n_examples),
        "code": list(row.code),
        "notes": list(row.notes),
        "verified": row_verification(row, data.runs).state,
        "accuracy_pct": {
            c: {"mean": _pct(s.mean), "std": _pct(s.std), "n": s.n} for c, s in row.stats.items()
        },
        "worst_class_pct": {c: _pct(s.mean) for c, s in row.worst.items()},
        "paper_pct": dict(sorted(row.paper.items())),
        "paper_source": row.paper_source,
        "paper_meta": dict(sorted(row.paper_meta.items())),
        "wall_time_s": [data.runs[rid].model.wall_time_s for rid in row.run_ids],
    }


def _table_dict(t: Table, data: SiteData) -> dict[str, Any]:
    _, ranks, _ = markdown_parts(t)
    return {
        "table": t.name,
        "protocol": t.key.protocol.label,
        "protocol_identity": t.key.protocol.identity,
        "retired": retired(t),
        "dataset": dataset_name(t),
        "norm": t.track.norm,
        "eps": t.track.eps,
        "data_fingerprint": t.track.fingerprint,
        "split": t.track.split,
        "teacher": teacher_name(t),
        "teacher_sha256": t.teacher_sha,
        "student": t.student,
        "sorted_by": t.sort_by,
        "rows": [_row_dict(r, k, data) for r, k in zip(t.rows, ranks, strict=True)],
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def table_json(t: Table, data: SiteData) -> str:
    return _dumps(_table_dict(t, data))


def table_csv(t: Table, data: SiteData) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["rank", "method", "recipe", "checkpoint", "runs"]
    for c in COLUMNS:
        head += [f"{c}_mean", f"{c}_std", f"{c}_n"]
    head += ["paper_aa", "paper_tag", "verified", "wall_time_s_mean", "run_ids"]
    w.writerow(head)
    for row in _table_dict(t, data)["rows"]:
        line = [row["rank"], row["method"], row["recipe_cell"], row["checkpoint"], row["runs"]]
        for c in COLUMNS:
            s = row["accuracy_pct"][c]
            line += [_num(s["mean"]), _num(s["std"]), s["n"]]
        walls = row["wall_time_s"]
        line += [
            _num(row["paper_pct"].get("aa")),
            row["paper_meta"].get("tag", ""),
            row["verified"],
            _num(sum(walls) / len(walls)),
            " ".join(row["run_ids"]),
        ]
        w.writerow(line)
    return buf.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def all_json(data: SiteData) -> str:
    return _dumps(
        {
            "tables": [_table_dict(t, data) for t in data.tables],
            "records": {rid: data.runs[rid].record for rid in sorted(data.runs)},
        }
    )
