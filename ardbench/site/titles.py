"""Names of a table in words (raw text: escape where used): its title, teacher, data, threat
model, and whether its protocol is retired."""

from __future__ import annotations

from ..results.grouping import teacher_label
from ..results.tables import Table

__all__ = ["dataset_name", "retired", "table_title", "teacher_name", "threat_model"]


def teacher_name(t: Table) -> str:
    if not t.teacher_sha:
        return "no teacher"
    labels = sorted(
        {teacher_label((r.get("teacher") or {}).get("spec")) for r in t.records if r.get("teacher")}
    )
    return labels[0]


def threat_model(t: Table) -> str:
    return f"{t.track.norm} ε = {t.track.eps}"


def dataset_name(t: Table) -> str:
    official = all(r["track"]["official"] for r in t.records)
    held = " (holdout)" if t.track.split != "test" else ""
    return t.track.dataset + ("" if official else " (npz copy)") + held


def retired(t: Table) -> str:
    """The retirement note of the table's protocol, or ""."""
    from ..protocols import PROTOCOLS

    pk = t.key.protocol
    if pk.modified or pk.name not in PROTOCOLS:
        return ""
    return PROTOCOLS.get(pk.name).retired


def table_title(t: Table) -> str:
    return f"{t.key.protocol.label} · {teacher_name(t)} → {t.student}"
