"""Which leaderboard table a record belongs to, and what that table's file is called.

Two functions decide it, and nothing else in :mod:`ardbench.results` does (the identities
are listed in :mod:`ardbench.protocols.identity`; the row a record's numbers go to is
:func:`row_key` / :func:`row_identity`):

- :func:`table_key` — a record's table: the protocol it followed (:func:`record_protocol`),
  the track (data fingerprint, threat model, evaluation split), the teacher's weights and the
  student's architecture;
- :func:`table_relpath` — the table's path relative to the output directory:
  ``<protocol>/<teacher-slug>__<student>.md``.

Aggregation, ``--check``, ``--add`` and ``compare`` only use the key's ``teacher_sha`` field
(teacherless runs are the reference rows of every teacher's table whose key is otherwise
equal) and the path.

- **Protocol** = the identity of the protocol values a run used (see
  :func:`ardbench.protocols.identity_of`), named by the registered protocol with that identity
  (several names can share one: ``ard-cifar10`` and ``iad-cifar10`` differ only by the seed,
  and their table is the base's, ``ard-lineage-cifar10``). A run whose values match no
  registered protocol is in a "modified" table: ``<name>+<identity[:8]>``. Records written
  before protocols had names are matched the same way, from their resolved config.

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

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

from ..protocols.eps import format_eps
from ..protocols.identity import row_hash
from .records import RecordLike, as_record
from .validate import RecordError

__all__ = [
    "MAX_SLUG",
    "ProtocolKey",
    "RowKey",
    "TableKey",
    "TrackKey",
    "dataset_label",
    "describe_key",
    "display_spec",
    "eval_split",
    "format_eps",
    "record_protocol",
    "record_relpath",
    "row_identity",
    "row_key",
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


def eval_split(record: RecordLike) -> str:
    """ "test" for the test set (the default), "holdout" for held-out training examples."""
    return as_record(record).eval.split


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


class ProtocolKey(NamedTuple):
    name: str  # the registered protocol's name, or the run's own (or "custom") when modified
    identity: str  # 12 hex digits
    modified: bool  # the values match no registered protocol

    @property
    def label(self) -> str:
        return f"{self.name}+{self.identity[:8]}" if self.modified else self.name


class TableKey(NamedTuple):
    """A table's identity. ``teacher_sha`` is "" for runs without a teacher."""

    protocol: ProtocolKey
    track: TrackKey
    teacher_sha: str
    student: str


_KIND_ORDER = {"standard": 0, "track": 1, "demo": 2, "base": 3, "faithful": 4}


def _registered_by_identity() -> dict[str, str]:
    """{identity: the registered name a table takes} (standard before track ... faithful)."""
    from ..protocols import all_protocols

    out: dict[str, str] = {}
    for p in sorted(all_protocols(), key=lambda p: (_KIND_ORDER.get(p.kind, 9), p.name)):
        out.setdefault(p.identity(), p.name)
    return out


def _legacy_identity(config: Mapping[str, Any], fingerprint: str) -> tuple[str | None, str]:
    """(registered name, identity) of a record written before protocols had names: the first
    registered protocol whose values the config matches (its per-method keys left out)."""
    from ..errors import ArdbenchError
    from ..protocols import all_protocols, identity_of

    try:
        for p in sorted(all_protocols(), key=lambda p: (_KIND_ORDER.get(p.kind, 9), p.name)):
            fp = fingerprint if p.data_fingerprint else None
            if identity_of(config, p.per_method, fp) == p.identity():
                return p.name, p.identity()
        return None, identity_of(config)
    except ArdbenchError:  # a config this version cannot parse: its own identity
        import hashlib
        import json

        blob = json.dumps(dict(config), sort_keys=True, default=str).encode()
        return None, hashlib.sha256(blob).hexdigest()[:12]


def record_protocol(record: RecordLike) -> ProtocolKey:
    """The protocol a record followed, named as its table is."""
    r = as_record(record)
    if r.protocol is not None:
        name, identity = r.protocol.name, r.protocol.identity
    else:
        name, identity = _legacy_identity(r.config, r.track.data_fingerprint)
    registered = _registered_by_identity().get(identity)
    if registered:
        return ProtocolKey(registered, identity, False)
    return ProtocolKey(name or "custom", identity, True)


def table_key(record: RecordLike) -> TableKey:
    """The table a record belongs to.

    =====================================  ============================================
    includes                               excludes
    =====================================  ============================================
    the protocol: its identity, named by   the method, its config, the recipe
    the registered protocol with it        the seed, the code version, the hardware
    the track: dataset name, norm, eps,    the teacher's spec (only its weights count)
    data fingerprint, evaluation split     the student's spec (only its architecture)
    the teacher's weights (sha256)
    the student's architecture
    =====================================  ============================================
    """
    r = as_record(record)
    t = r.track
    track = TrackKey(
        dataset_label(t.dataset), t.norm, format_eps(t.eps), t.data_fingerprint, r.eval.split
    )
    return TableKey(record_protocol(r), track, r.teacher_sha, r.student.arch)


class RowKey(NamedTuple):
    """A leaderboard row's identity: the runs with one key are averaged into one row."""

    table: TableKey
    method: str
    recipe: str  # the recipe as recorded ("" when none)
    row_hash: str  # ardbench.protocols.identity.row_hash of the config
    checkpoint: str  # which checkpoint: the rule's ("last", ...) or another one the run kept


def row_key(record: RecordLike, checkpoint: str | None = None) -> RowKey:
    """The row a record's (``checkpoint``'s, default the rule's) numbers go to.

    =====================================  ============================================
    includes                               excludes
    =====================================  ============================================
    the table key (:func:`table_key`)      the seed (a row averages over seeds)
    the method's name                      the paper figures the recipe sets beside ours
    the recipe (file or name) as recorded  the speed switches, ``eval.batch_size`` and
    the row hash of the config, with the   ``eval.aa_batch_size``, paths, device
    method config, the protocol's name     the run id, code version, hardware
    and ``train.deterministic``
    the checkpoint (last, best, swa)
    =====================================  ============================================
    """
    r = as_record(record)
    return RowKey(
        table_key(r),
        r.method.name,
        r.recipe or "",
        row_hash(r.config),
        checkpoint or r.checkpoint_kind,
    )


def row_identity(record: RecordLike, checkpoint: str | None = None) -> str:
    """:func:`row_key` as 12 hex digits: the ``row_identity`` column of ``ardbench.results()``
    (group by it to average exactly the runs a leaderboard row averages)."""
    key = row_key(record, checkpoint)
    blob = json.dumps([list(key.table), *key[1:]], separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def describe_key(key: TableKey) -> str:
    """A table key in words, for messages."""
    label, norm, eps, fp, split = key.track
    teacher = f"teacher sha256 {key.teacher_sha[:8]}" if key.teacher_sha else "no teacher"
    held = ", evaluated on a training holdout" if split != "test" else ""
    return (
        f"protocol {key.protocol.label}: {label} {norm} {eps} (data {fp[:8]}{held}), "
        f"{teacher}, student {key.student}"
    )


def _table_dir(key: TableKey) -> str:
    """``<protocol>`` (``+<identity[:8]>`` when modified); a protocol defined on a dataset name
    (not a fingerprint) run on other arrays also names their fingerprint; ``_holdout`` for
    selection runs evaluated on held-out training data."""
    out = slug(key.protocol.label)
    if key.protocol.modified and key.track.dataset.startswith("npz:"):
        out += f"_{key.track.fingerprint[:8]}"
    return out if key.track.split == "test" else f"{out}_{slug(key.track.split)}"


def table_relpath(key: TableKey, records: Iterable[RecordLike]) -> str:
    """The table's file, relative to the output directory (``records``: the table's runs; the
    teacher's label is the first, in sorted order, of their teacher specs' labels)."""
    if key.teacher_sha:
        teachers = [as_record(r).teacher for r in records]
        labels = sorted(teacher_label(t.spec) for t in teachers if t is not None)
        teacher = f"{slug(labels[0] if labels else 'teacher')}-{slug(key.teacher_sha[:8])}"
    else:
        teacher = "no-teacher"
    rel = f"{_table_dir(key)}/{teacher}__{slug(key.student)}.md"
    _check_relative(rel)
    return rel


def record_relpath(record: RecordLike) -> Path:
    """Where ``leaderboard --add`` files a record under the runs directory: beside the name of
    its table, ``<protocol>/<teacher-slug>__<student>/<run_id>.json``."""
    r = as_record(record)
    table = table_relpath(table_key(r), [r]).removesuffix(".md")
    rel = f"{table}/{r.run_id}.json"  # a validated id (schema.ID_PATTERN)
    _check_relative(rel)
    return Path(rel)


def _check_relative(rel: str) -> None:
    """A generated path never leaves its directory (the slugs make this so; this says it)."""
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise RecordError("", f"unsafe generated path {rel!r}")
