"""Which leaderboard table a record belongs to, and what that table's file is called.

Two functions decide it, and nothing else in :mod:`ardbench.results` does:

- :func:`table_key` — a record's table (today: track, teacher weights, student arch);
- :func:`table_relpath` — the table's path relative to the output directory (today:
  ``<track-slug>/<teacher-slug>__<student>.md``).

To group and name tables another way (by a named protocol, say), replace these two (and
:func:`describe_key`, the key in words for messages); aggregation, ``--check``, ``--add`` and
``compare`` only use the key's ``teacher_sha`` field (teacherless runs are the reference rows
of every teacher's table whose key is otherwise equal) and the path. The markdown header
(:mod:`ardbench.results.render`) reads the track's parts to describe it.

- **Track** = dataset (the spec's name; ``npz:`` copies by file name) + norm + eps + the data
  fingerprint + the evaluation split: two runs on different pixels never share a table, and a
  copy of a dataset is not the dataset. Slug: ``cifar10_linf_8-255_<fingerprint[:8]>``.
- **Teacher** = the sha256 of its weights (specs that name the same weights share a table).
  Slug: a label from the spec and ``sha256[:8]``; ``no-teacher`` for methods without one.

File names are built from canonical parts only: slugs (runs of characters other than
``[A-Za-z0-9_.+]`` become ``-``; no leading or trailing ``.``/``-``; at most
:data:`MAX_SLUG` characters), the validated student arch and run id, and hex prefixes. A
teacher spec or dataset path never reaches a file name unsanitised: whatever it holds (``/``,
``..``, ``|``, newlines), the path stays one directory and one file inside the output
directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from .validate import RecordError

__all__ = [
    "MAX_SLUG",
    "TableKey",
    "TrackKey",
    "dataset_label",
    "describe_key",
    "display_spec",
    "eval_split",
    "format_eps",
    "record_relpath",
    "slug",
    "table_key",
    "table_relpath",
    "teacher_label",
]

MAX_SLUG = 80


def slug(text: str) -> str:
    """A filename-safe part: runs of other characters become '-', at most MAX_SLUG long."""
    out = re.sub(r"[^A-Za-z0-9_.+]+", "-", text).strip("-.")[:MAX_SLUG].strip("-.")
    return out or "x"


def format_eps(eps: float) -> str:
    """8/255-style when eps is a whole or half number of 255ths (0.5/255), else up to 6
    significant digits (TRADES's 0.031)."""
    k2 = eps * 255 * 2
    if abs(k2 - round(k2)) < 1e-6 and round(k2) > 0:
        return f"{round(k2) / 2:g}/255"
    return f"{eps:.6g}"


def eval_split(record: Mapping[str, Any]) -> str:
    """ "test" for the test set (the default), "holdout" for held-out training examples."""
    split = record["eval"].get("split")
    return "test" if split in (None, "test") else "holdout"


def dataset_label(spec: str) -> str:
    """The dataset part of a track: the registered name, or ``npz:<file name(s)>``."""
    if spec.startswith("npz:"):
        return "npz:" + "+".join(Path(p).name for p in spec[4:].split("+"))
    return spec


def display_spec(spec: str | None) -> str:
    """A model spec without the directories of the machine it ran on (``ARCH:teacher.pt``)."""
    if not spec:
        return ""
    head, sep, tail = spec.partition(":")
    if sep and head != "robustbench" and "/" not in head and "." not in head:
        return f"{head}:{Path(tail).name}"
    return Path(spec).name if spec.endswith(".pt2") else spec


def teacher_label(spec: str | None) -> str:
    """A short readable name for a teacher spec (display text; :func:`slug` it for files)."""
    if not spec:
        return "no-teacher"
    head, sep, tail = spec.partition(":")
    if sep and head in ("robustbench", "run"):
        return f"{head}-{Path(tail).name}"
    if sep and "/" not in head and "." not in head:  # ARCH:PATH
        return f"{head}-{Path(tail).stem}"
    return Path(spec).stem if spec.endswith(".pt2") else spec


class TrackKey(NamedTuple):
    dataset: str  # dataset_label of the spec
    norm: str
    eps: str  # format_eps
    fingerprint: str
    split: str  # "test" | "holdout"


class TableKey(NamedTuple):
    """A table's identity. ``teacher_sha`` is "" for runs without a teacher."""

    track: TrackKey
    teacher_sha: str
    student: str


def table_key(record: Mapping[str, Any]) -> TableKey:
    """The table a record belongs to."""
    t = record["track"]
    track = TrackKey(
        dataset_label(t["dataset"]),
        t["norm"],
        format_eps(t["eps"]),
        t["data_fingerprint"],
        eval_split(record),
    )
    teacher = record.get("teacher") or {}
    return TableKey(track, teacher.get("sha256", ""), record["student"]["arch"])


def describe_key(key: TableKey) -> str:
    """A table key in words, for messages."""
    label, norm, eps, fp, split = key.track
    teacher = f"teacher sha256 {key.teacher_sha[:8]}" if key.teacher_sha else "no teacher"
    held = ", evaluated on a training holdout" if split != "test" else ""
    return f"{label} {norm} {eps} (data {fp[:8]}{held}), {teacher}, student {key.student}"


def _track_slug(key: TrackKey) -> str:
    label = slug(key.dataset.replace(":", "-"))
    out = (
        f"{label}_{slug(key.norm.lower())}_{slug(key.eps.replace('/', '-'))}_{key.fingerprint[:8]}"
    )
    return out if key.split == "test" else f"{out}_{slug(key.split)}"


def table_relpath(key: TableKey, records: Iterable[Mapping[str, Any]]) -> str:
    """The table's file, relative to the output directory (``records``: the table's runs; the
    teacher's label is the first, in sorted order, of their teacher specs' labels)."""
    if key.teacher_sha:
        labels = sorted(
            teacher_label((r.get("teacher") or {}).get("spec")) for r in records if r.get("teacher")
        )
        teacher = f"{slug(labels[0] if labels else 'teacher')}-{slug(key.teacher_sha[:8])}"
    else:
        teacher = "no-teacher"
    rel = f"{_track_slug(key.track)}/{teacher}__{slug(key.student)}.md"
    _check_relative(rel)
    return rel


def record_relpath(record: Mapping[str, Any]) -> Path:
    """Where ``leaderboard --add`` files a record under the runs directory: beside the name of
    its table, ``<track-slug>/<teacher-slug>__<student>/<run_id>.json``."""
    table = table_relpath(table_key(record), [record]).removesuffix(".md")
    rel = f"{table}/{record['run_id']}.json"  # a validated id (schema.ID_PATTERN)
    _check_relative(rel)
    return Path(rel)


def _check_relative(rel: str) -> None:
    """A generated path never leaves its directory (the slugs make this so; this says it)."""
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise RecordError("", f"unsafe generated path {rel!r}")
