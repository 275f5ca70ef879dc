"""Run records: build, write (atomically, never over another), load (upgrading older schema
versions in memory) as the typed :class:`~ardbench.results.schema.Record`, and find.

The schema lives in :mod:`ardbench.results.schema` (the field table is in its docstring), its
validation and the version upgrades in :mod:`ardbench.results.validate`, the provenance
blocks (code version, the method's source hash, library versions, hardware) in
:mod:`ardbench.results.provenance`. Their public names are re-exported here:
``from ardbench.results.records import validate_record`` keeps working.

:func:`load_record`, :func:`find_records` and :func:`as_record` give a
:class:`~ardbench.results.schema.Record`: read it by attribute (``record.eval.column("aa")``,
``record.teacher_sha``). :func:`record_bytes` writes a record (typed or a dict) as canonical
JSON; a loaded record writes back to exactly the bytes it was read from.

Writing (:func:`write_record`) is atomic and never overwrites: the record is written to a
temporary file in the target directory and hard-linked to its final name, which fails if the
name exists, so two runs that finish at the same time can never clobber each other's record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..io import UnreadableFileError, atomic_write_bytes, read_json_bounded
from ..protocols import protocol_ref
from ..protocols.identity import row_hash
from .provenance import (
    code_version,
    hardware,
    library_versions,
    method_source_files,
    method_source_sha256,
)
from .schema import COLUMNS, SCHEMA_VERSION, Record
from .validate import (
    RecordError,
    RecordExistsError,
    is_official_dataset,
    upgrade_record,
    validate_paper,
    validate_record,
)

RECORD_FILENAME = "record.json"
RecordLike = Record | Mapping[str, Any]
"""A typed record, or a record as a JSON dict (upgraded and validated where it is read)."""

__all__ = [
    "COLUMNS",
    "RECORD_FILENAME",
    "SCHEMA_VERSION",
    "RecordError",
    "Record",
    "RecordExistsError",
    "RecordLike",
    "as_record",
    "build_record",
    "code_version",
    "example_record",
    "find_records",
    "hardware",
    "is_official_dataset",
    "library_versions",
    "load_record",
    "method_source_sha256",
    "read_json",
    "protocol_hash",
    "record_bytes",
    "upgrade_record",
    "validate_paper",
    "validate_record",
    "write_bytes_exclusive",
    "write_record",
]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _timestamp(value: str | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def _check(checks: dict[str, dict[str, Any]] | None, name: str) -> dict[str, Any]:
    """``{"check": ...}`` when the teacher check of ``name`` ran (train.teacher_check)."""
    return {"check": checks[name]} if checks and name in checks else {}


def _track_block(cfg: Any, dataset: Any) -> dict[str, Any]:
    return {
        "dataset": cfg.dataset,
        "norm": cfg.attack.norm,
        "eps": float(cfg.eval_eps),
        "data_fingerprint": dataset.fingerprint,
        "test_fingerprint": dataset.test_fingerprint,
        "num_classes": dataset.num_classes,
        "official": is_official_dataset(cfg.dataset),
        "description": getattr(dataset, "description", None) or None,
    }


def _teacher_block(cfg: Any, teacher: Any, checks: dict[str, Any] | None) -> dict[str, Any] | None:
    if teacher is None:
        return None
    return {
        "spec": cfg.teacher,
        "resolved": teacher.spec,
        "sha256": teacher.sha256,
        **_check(checks, "teacher"),
    }


def _method_block(cfg: Any, cls: type) -> dict[str, Any]:
    return {
        "name": cfg.method,
        "config": cfg.method_config,
        "config_hash": cfg.config_hash(),
        "unofficial": bool(getattr(cls, "unofficial", False)),
        "teacher_in_attack": bool(getattr(cls, "teacher_in_attack", False)),
        "source_sha256": method_source_sha256(cls),
    }


def _extra_teachers_block(
    extra_teachers: dict[str, Any] | None, checks: dict[str, Any] | None
) -> dict[str, Any]:
    """``{"extra_teachers": ...}`` for the other frozen networks a method named, if any."""
    if not extra_teachers:
        return {}
    return {
        "extra_teachers": {
            name: {"spec": m.spec, "sha256": m.sha256, "arch": m.arch, **_check(checks, name)}
            for name, m in sorted(extra_teachers.items())
        }
    }


def build_record(
    *,
    cfg: Any,
    run_id: str,
    dataset: Any,
    teacher: Any,
    student: Any,
    eval_block: dict[str, Any],
    wall_time_s: float,
    device: torch.device,
    checkpoint: dict[str, Any],
    started_at: str | datetime | None = None,
    finished_at: str | datetime | None = None,
    checkpoint_rule: str = "last",
    checkpoints: dict[str, dict[str, Any]] | None = None,
    extra_teachers: dict[str, Any] | None = None,
    teacher_checks: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The record of a finished run (schema :data:`SCHEMA_VERSION`) as a JSON dict; validate
    before writing (:func:`write_record` does). ``eval_block`` and ``checkpoint`` describe the
    checkpoint the protocol's rule reports; ``checkpoints`` the run's others (``last`` beside a
    best-on-holdout or SWA checkpoint)."""
    from ..methods import get_method

    cls = get_method(cfg.method)
    source = method_source_files(cls)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": _timestamp(started_at),
        "finished_at": _timestamp(finished_at) or _utc_now(),
        "track": _track_block(cfg, dataset),
        "teacher": _teacher_block(cfg, teacher, teacher_checks),
        "student": {"spec": cfg.student, "arch": student.arch},
        "method": _method_block(cfg, cls),
        "recipe": cfg.recipe,
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "wall_time_s": round(wall_time_s, 3),
        "code_version": code_version(source[1] if source else ()),
        "hardware": hardware(device),
        "versions": library_versions(),
        "eval": eval_block,
        "checkpoint": checkpoint,
        "paper": cfg.paper.to_dict() if cfg.paper is not None else None,
        "protocol": protocol_ref(cfg.to_dict(), dataset.fingerprint),
        "checkpoint_rule": checkpoint_rule,
        **({"checkpoints": checkpoints} if checkpoints else {}),
        **_extra_teachers_block(extra_teachers, teacher_checks),
    }


# ------------------------------------------------------------------------ loading, finding


def _record_path(path: str | Path) -> Path:
    path = Path(path)
    return path / RECORD_FILENAME if path.is_dir() else path


def read_json(path: Path) -> Any:
    """A JSON file's value, or :class:`RecordError` naming the file when it is not a regular
    file of UTF-8 JSON within the size and depth limits (:func:`ardbench.io.read_json_bounded`)."""
    try:  # a regular file (never a FIFO or a device), at most 16 MiB, at most 64 deep
        return read_json_bounded(path)
    except UnreadableFileError as exc:
        raise RecordError("", exc.reason, source=path) from None
    except RecursionError:
        raise RecordError("", "JSON nested too deeply", source=path) from None


def as_record(record: RecordLike) -> Record:
    """A typed record: a :class:`Record` as it is; a dict upgraded (older schema versions)
    and validated (:class:`RecordError` naming the first bad field)."""
    if isinstance(record, Record):
        return record
    data = upgrade_record(record)
    validate_record(data)
    return Record.model_validate(data)


def load_record(path: str | Path) -> Record:
    """Read, upgrade (in memory) and validate a record file or a run directory's record."""
    path = _record_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no run record at {path}")
    data = read_json(path)  # a regular file only
    try:
        return as_record(data)
    except RecordError as exc:
        raise exc.at(path) from None


def find_records(root: str | Path) -> Iterator[tuple[Path, Record]]:
    """(path, record) for every record under ``root`` (recursive, sorted by path).

    Files named ``record.json`` are records; any other ``*.json`` is one when it has a
    ``schema_version`` key (so a run directory's ``config.json`` and ``model.json`` are
    skipped). Hidden files and directories (temporary files of atomic writes) are skipped.
    """
    root = Path(root)
    if root.is_file():
        yield root, load_record(root)
        return
    if not root.is_dir():
        raise FileNotFoundError(f"no directory {root} (where the run records should be)")
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.name != RECORD_FILENAME:
            try:
                data = read_json(path)
            except RecordError:
                continue
            if not isinstance(data, dict) or "schema_version" not in data:
                continue
        yield path, load_record(path)


# ------------------------------------------------------------------------------------ write


def record_bytes(record: RecordLike) -> bytes:
    """The canonical serialisation: sorted keys, 2-space indent, no NaN, trailing newline."""
    data = record.to_dict() if isinstance(record, Record) else record
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def write_record(target: str | Path, record: RecordLike, *, validate: bool = True) -> Path:
    """Write ``record`` atomically to ``target`` (a ``.json`` path, or a directory: then
    ``target/record.json``) and never over an existing file: :class:`RecordExistsError`.

    The bytes go to a temporary file in the same directory (fsynced), which is then hard-linked
    to the final name; ``link`` fails when the name exists, so of two concurrent writers exactly
    one wins and a reader never sees a partial record. On a filesystem without hard links the
    final name is created with ``O_EXCL`` (still never clobbers; a reader could see a partial
    file while it is written).
    """
    path = Path(target)
    if path.suffix != ".json":
        path = path / RECORD_FILENAME
    if validate and not isinstance(record, Record):  # a Record was validated when built
        validate_record(record)
    write_bytes_exclusive(path, record_bytes(record))
    return path


def write_bytes_exclusive(path: Path, blob: bytes) -> None:
    """``blob`` to ``path`` whole or not at all, and never over an existing file
    (:class:`RecordExistsError`); see :func:`write_record`."""
    try:
        atomic_write_bytes(path, blob, exclusive=True)
    except FileExistsError:
        raise RecordExistsError(
            "",
            "a record already exists here; records are immutable (use a new run id)",
            source=path,
        ) from None


# ------------------------------------------------------------------------------ grouping keys


def protocol_hash(record: RecordLike) -> str:
    """The row hash of a record's config (:func:`ardbench.protocols.identity.row_hash`; this
    name is kept for compatibility: it never was a protocol's identity)."""
    config = record.config if isinstance(record, Record) else record.get("config") or {}
    return row_hash(config)


# ---------------------------------------------------------------------------------- example


def example_record(**overrides: Any) -> dict[str, Any]:
    """A minimal valid current-version record (for documentation and tests). ``overrides``
    replace top-level fields; nested dicts are merged one level deep (``eval={"accuracy": ...}``
    keeps ``eval.n_examples``)."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": "kd-resnet18-s0-20250101-000000-abcd",
        "started_at": "2025-01-01T00:00:00+00:00",
        "finished_at": "2025-01-01T01:00:00+00:00",
        "track": {
            "dataset": "cifar10",
            "norm": "Linf",
            "eps": 8 / 255,
            "data_fingerprint": "0" * 64,
            "num_classes": 10,
            "official": True,
            "description": None,
        },
        "teacher": {
            "spec": "robustbench:Zhang2019Theoretically",
            "resolved": "robustbench:Zhang2019Theoretically",
            "sha256": "1" * 64,
        },
        "student": {"spec": "resnet18", "arch": "resnet18"},
        "method": {
            "name": "kd",
            "config": {},
            "config_hash": "2" * 16,
            "unofficial": False,
            "teacher_in_attack": False,
        },
        "recipe": None,
        "config": {"method": "kd", "train": {"seed": 0, "epochs": 1}},
        "seed": 0,
        "epochs": 1,
        "wall_time_s": 1.0,
        "code_version": {"git_sha": "3" * 40, "dirty": False, "version": "0.1.0"},
        "hardware": {"device": "cpu"},
        "versions": {"python": "3.11.0", "torch": "2.14.1"},
        "eval": {
            "n_examples": 100,
            "eps": 8 / 255,
            "norm": "Linf",
            "accuracy": {"clean": 0.8, "pgd20": 0.5},
            "settings": {},
        },
        "checkpoint": {"path": "runs/x/model.pt", "sha256": "4" * 64},
        "paper": None,
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    return record
