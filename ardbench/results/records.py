"""Run records: one immutable, validated JSON document per finished run (schema version 2).

A record is everything needed to place a run in a leaderboard table and to say what produced
it (DESIGN.md, principles 3-4). The schema is written as code below (:data:`RECORD_SCHEMA`);
:func:`validate_record` checks a dict against it and raises :class:`RecordError` naming the
first bad field (``eval.accuracy.pgd20``...).

Schema version 2 (fields; "?" = may be null or absent):

==================  ========================================================================
schema_version      2
run_id              ``[A-Za-z0-9][A-Za-z0-9._+-]*`` (the run directory's name)
started_at?         ISO-8601 with a timezone (UTC when ardbench writes it)
finished_at         ISO-8601 with a timezone
track               ``dataset`` (spec as run), ``norm`` (Linf | L2), ``eps`` (> 0, the
                    evaluation radius), ``data_fingerprint`` (sha256 of the arrays),
                    ``num_classes``, ``official`` (loaded from the dataset's own source, not an
                    ``npz`` copy), ``description?``
teacher?            ``spec``, ``resolved``, ``sha256`` (of the weights); null without a teacher
student             ``spec``, ``arch``
method              ``name``, ``config`` (resolved method_config), ``config_hash``,
                    ``unofficial``, ``teacher_in_attack``
recipe?             preset or recipe file that produced the config (provenance)
config              the resolved run config (``RunConfig.to_dict()``)
seed, epochs        the training seed and number of epochs (equal to those in ``config``)
wall_time_s         training time, seconds
code_version        ``git_sha?`` (40 hex), ``dirty?``, ``version?`` (at least a sha or a version)
hardware            ``device`` and whatever else describes the machine
versions            library versions: ``python``, ``torch`` and more
eval                the evaluator's block: ``n_examples``, ``accuracy`` ({column: fraction in
                    [0, 1]}), ``eps?``/``norm?`` (equal to the track's), ``settings?`` ...
checkpoint          ``path`` and/or ``url``, ``sha256``
paper?              paper-reported figures the recipe reproduces: ``source?`` and, per column
                    (``clean``, ``aa``, ...), a percentage in [0, 100] or null
upgraded_from?      set by :func:`load_record` when it upgraded an older record in memory
==================  ========================================================================

Version 1 (what the trainer wrote before this module grew a schema) lacks ``started_at``,
``track.official`` and ``track.description``; :func:`load_record` upgrades it in memory (the
file on disk is never rewritten: records are immutable). Unknown or newer versions are rejected
with a message that says what to do.

Writing (:func:`write_record`) is atomic and never overwrites: the record is written to a
temporary file in the target directory and hard-linked to its final name, which fails if the
name exists, so two runs that finish at the same time can never clobber each other's record.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import re
import subprocess
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes
from ..protocols import computation_dict

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
RECORD_FILENAME = "record.json"
COLUMNS = ("clean", "fgsm", "pgd20", "cw", "aa")
NORMS = ("Linf", "L2")

__all__ = [
    "COLUMNS",
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "RecordError",
    "RecordExistsError",
    "build_record",
    "code_version",
    "example_record",
    "find_records",
    "hardware",
    "is_official_dataset",
    "library_versions",
    "load_record",
    "protocol_hash",
    "record_bytes",
    "upgrade_record",
    "validate_paper",
    "validate_record",
    "write_record",
]


class RecordError(ValueError):
    """A record that is not valid; ``field`` is the dotted name of the bad field."""

    def __init__(self, field: str, message: str, *, source: str | Path | None = None) -> None:
        self.field = field
        self.message = message
        self.source = None if source is None else str(source)
        where = f"{self.source}: " if self.source else ""
        name = f"record field {field!r}" if field else "record"
        super().__init__(f"{where}{name}: {message}")

    def at(self, source: str | Path) -> RecordError:
        """The same error, saying which file it came from."""
        return RecordError(self.field, self.message, source=source)


class RecordExistsError(RecordError, FileExistsError):
    """``write_record`` refused to overwrite an existing record."""


# ------------------------------------------------------------------------------ provenance


def code_version() -> dict[str, Any]:
    """git sha + dirty flag of the checkout the package runs from, else the installed version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"git_sha": sha, "dirty": dirty, "version": _version("ardbench")}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "dirty": None, "version": _version("ardbench")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{
            d: _version(d)
            for d in ("torchvision", "numpy", "pandas", "pyautoattack", "robustbench")
        },
    }


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def is_official_dataset(spec: str | None) -> bool:
    """True for a registered dataset (``cifar10``, ``digits``... loaded from its own source);
    False for ``npz:`` arrays, which are copies whose identity is only their fingerprint."""
    return bool(spec) and not str(spec).startswith("npz:")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _timestamp(value: str | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def build_record(
    *,
    cfg,
    run_id: str,
    dataset,
    teacher,
    student,
    eval_block: dict[str, Any],
    wall_time_s: float,
    device: torch.device,
    checkpoint: dict[str, Any],
    started_at: str | datetime | None = None,
    finished_at: str | datetime | None = None,
) -> dict[str, Any]:
    """The record of a finished run (schema :data:`SCHEMA_VERSION`); validate before writing."""
    from ..methods import get_method

    cls = get_method(cfg.method)
    eps = float(cfg.eval_eps)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": _timestamp(started_at),
        "finished_at": _timestamp(finished_at) or _utc_now(),
        "track": {
            "dataset": cfg.dataset,
            "norm": cfg.attack.norm,
            "eps": eps,
            "data_fingerprint": dataset.fingerprint,
            "test_fingerprint": dataset.test_fingerprint,
            "num_classes": dataset.num_classes,
            "official": is_official_dataset(cfg.dataset),
            "description": getattr(dataset, "description", None) or None,
        },
        "teacher": None
        if teacher is None
        else {"spec": cfg.teacher, "resolved": teacher.spec, "sha256": teacher.sha256},
        "student": {"spec": cfg.student, "arch": student.arch},
        "method": {
            "name": cfg.method,
            "config": cfg.method_config,
            "config_hash": cfg.config_hash(),
            "unofficial": bool(getattr(cls, "unofficial", False)),
            "teacher_in_attack": bool(getattr(cls, "teacher_in_attack", False)),
        },
        "recipe": cfg.recipe,
        "config": cfg.to_dict(),
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "wall_time_s": round(wall_time_s, 3),
        "code_version": code_version(),
        "hardware": hardware(device),
        "versions": library_versions(),
        "eval": eval_block,
        "checkpoint": checkpoint,
        "paper": cfg.paper.to_dict() if cfg.paper is not None else None,
    }


# ---------------------------------------------------------------------------- schema as code


class Spec:
    """One field's type and range; ``check`` raises RecordError naming ``path``."""

    nullable = False

    def check(self, value: Any, path: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Real):
        return f"a number ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class Null(Spec):
    """Wraps another spec: null is accepted too."""

    nullable = True

    def __init__(self, inner: Spec) -> None:
        self.inner = inner

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"


class Str(Spec):
    def __init__(
        self, *, pattern: str | None = None, choices: tuple[str, ...] | None = None, what: str = ""
    ) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = choices
        self.what = what

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise RecordError(path, f"expected {self.describe()}, got {_kind(value)}")
        if not value:
            raise RecordError(path, f"expected {self.describe()}, got an empty string")
        if self.choices is not None and value not in self.choices:
            raise RecordError(path, f"expected one of {', '.join(self.choices)}, got {value!r}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise RecordError(path, f"expected {self.describe()}, got {value!r}")

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return self.what or "a non-empty string"


class Bool(Spec):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise RecordError(path, f"expected true or false, got {_kind(value)}")

    def describe(self) -> str:
        return "true or false"


class Num(Spec):
    """A finite real number (never a boolean) in [lo, hi] (``lo_open``: lo excluded)."""

    def __init__(
        self,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
        integer: bool = False,
        what: str = "",
    ) -> None:
        self.lo, self.hi, self.lo_open, self.integer, self.what = lo, hi, lo_open, integer, what

    def check(self, value: Any, path: str) -> None:
        ok_type = isinstance(value, int) if self.integer else isinstance(value, Real)
        if isinstance(value, bool) or not ok_type:
            raise RecordError(path, f"expected {self.describe()}, got {_kind(value)}")
        if not math.isfinite(value):
            raise RecordError(path, f"expected {self.describe()}, got {value!r}")
        low_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        if low_bad or (self.hi is not None and value > self.hi):
            raise RecordError(path, f"expected {self.describe()}, got {value!r}")

    def describe(self) -> str:
        base = self.what or ("an integer" if self.integer else "a number")
        if self.lo is not None and self.hi is not None:
            return f"{base} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
        if self.lo is not None:
            return f"{base} {'>' if self.lo_open else '>='} {self.lo:g}"
        return base


class Timestamp(Spec):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise RecordError(path, f"expected an ISO-8601 timestamp, got {_kind(value)}")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(path, f"expected an ISO-8601 timestamp, got {value!r}") from None
        if parsed.tzinfo is None:
            raise RecordError(path, f"timestamp {value!r} has no timezone (write UTC: +00:00)")

    def describe(self) -> str:
        return "an ISO-8601 timestamp with a timezone"


class AnyJSON(Spec):
    def check(self, value: Any, path: str) -> None:
        return None

    def describe(self) -> str:
        return "any JSON value"


class Obj(Spec):
    """An object with known fields (``required``/``optional``) and what other keys may hold."""

    def __init__(
        self,
        required: dict[str, Spec] | None = None,
        optional: dict[str, Spec] | None = None,
        *,
        extra: Spec | None = None,
        what: str = "an object",
    ) -> None:
        self.required = required or {}
        self.optional = optional or {}
        self.extra = extra  # None: no other keys allowed
        self.what = what

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise RecordError(path, f"expected {self.what}, got {_kind(value)}")
        for key, spec in self.required.items():
            sub = _join(path, key)
            if key not in value:
                raise RecordError(sub, f"missing (required: {spec.describe()})")
            spec.check(value[key], sub)
        for key, spec in self.optional.items():
            if key in value:
                spec.check(value[key], _join(path, key))
        for key in value:
            if not isinstance(key, str):
                raise RecordError(path, f"keys must be strings, got {key!r}")
            if key in self.required or key in self.optional:
                continue
            if self.extra is None:
                known = ", ".join(sorted({*self.required, *self.optional}))
                raise RecordError(_join(path, key), f"unknown field (known here: {known})")
            self.extra.check(value[key], _join(path, key))

    def describe(self) -> str:
        return self.what


class Seq(Spec):
    def __init__(self, item: Spec) -> None:
        self.item = item

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise RecordError(path, f"expected a list, got {_kind(value)}")
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")

    def describe(self) -> str:
        return f"a list of {self.item.describe()}"


class Fractions(Spec):
    """A fraction in [0, 1], null (not run), or an object of those (e.g. a breakdown)."""

    def check(self, value: Any, path: str) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                self.check(v, _join(path, str(k)))
            return
        Num(0.0, 1.0, what="an accuracy as a fraction").check(value, path)

    def describe(self) -> str:
        return "an accuracy as a fraction in [0, 1] (or null)"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


HEX64 = Str(pattern=r"[0-9a-f]{64}", what="a sha256 (64 lowercase hex digits)")
HEX40 = Str(pattern=r"[0-9a-f]{40}", what="a git sha (40 lowercase hex digits)")
RUN_ID = Str(
    pattern=r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}",
    what="a run id (letters, digits, '.', '_', '+', '-'; starting with a letter or digit)",
)
SNAKE = Str(pattern=r"[a-z][a-z0-9_]*", what="a lowercase snake_case name")
PERCENT = Null(Num(0.0, 100.0, what="a percentage"))

TRACK = Obj(
    required={
        "dataset": Str(what="a dataset spec"),
        "norm": Str(choices=NORMS),
        "eps": Num(0.0, lo_open=True, what="eps"),
        "data_fingerprint": HEX64,
        "num_classes": Num(2, integer=True),
        "official": Bool(),
    },
    optional={"description": Null(Str()), "test_fingerprint": HEX64},
    extra=AnyJSON(),
)
TEACHER = Null(
    Obj(
        required={"spec": Str(), "sha256": HEX64},
        optional={"resolved": Null(Str()), "arch": Null(Str())},
        extra=AnyJSON(),
    )
)
STUDENT = Obj(required={"spec": Str(), "arch": Str()}, extra=AnyJSON())
METHOD = Obj(
    required={
        "name": SNAKE,
        "config": Obj(extra=AnyJSON(), what="an object (the resolved method_config)"),
        "config_hash": Str(pattern=r"[0-9a-f]{8,64}", what="a hex config hash"),
        "unofficial": Bool(),
        "teacher_in_attack": Bool(),
    },
    extra=AnyJSON(),
)
CODE_VERSION = Obj(
    optional={"git_sha": Null(HEX40), "dirty": Null(Bool()), "version": Null(Str())},
    extra=AnyJSON(),
)
HARDWARE = Obj(required={"device": Str()}, extra=AnyJSON())
VERSIONS = Obj(required={"python": Str(), "torch": Str()}, extra=Null(Str()))
EVAL = Obj(
    required={
        "n_examples": Num(1, integer=True),
        "accuracy": Obj(extra=Fractions(), what="an object {column: fraction}"),
    },
    optional={
        "eps": Num(0.0, lo_open=True, what="eps"),
        "norm": Str(choices=NORMS),
        "settings": Obj(extra=AnyJSON()),
        "worst_class": Obj(extra=Fractions()),
        "aa_unreliable": Bool(),
        "warnings": Seq(Str()),
    },
    extra=AnyJSON(),
)
CHECKPOINT = Obj(
    required={"sha256": HEX64},
    optional={"path": Null(Str()), "url": Null(Str())},
    extra=AnyJSON(),
)
PAPER = Null(
    Obj(
        optional={"source": Null(Str()), **{c: PERCENT for c in COLUMNS}},
        extra=AnyJSON(),
        what="an object {source, clean, aa, ...: percentage}",
    )
)

RECORD_SCHEMA = Obj(
    required={
        "schema_version": Num(integer=True),
        "run_id": RUN_ID,
        "finished_at": Timestamp(),
        "track": TRACK,
        "teacher": TEACHER,
        "student": STUDENT,
        "method": METHOD,
        "config": Obj(extra=AnyJSON(), what="an object (the resolved run config)"),
        "seed": Num(0, integer=True),
        "epochs": Num(1, integer=True),
        "wall_time_s": Num(0.0),
        "code_version": CODE_VERSION,
        "hardware": HARDWARE,
        "versions": VERSIONS,
        "eval": EVAL,
        "checkpoint": CHECKPOINT,
    },
    optional={
        "started_at": Null(Timestamp()),
        "recipe": Null(Str()),
        "paper": PAPER,
        "upgraded_from": Num(1, integer=True),
    },
    extra=None,
    what="an object",
)
"""The version-2 record, as code. Unknown top-level fields are errors (a typo would otherwise
silently drop information); nested objects accept extra keys so that the evaluator and the
hardware block can grow without a schema bump."""


def validate_record(d: Any) -> None:
    """Raise :class:`RecordError` naming the first bad field of ``d`` (a current-version
    record: upgrade older ones with :func:`upgrade_record` first)."""
    if isinstance(d, Mapping) and "schema_version" in d:
        v = d["schema_version"]
        if v != SCHEMA_VERSION:
            raise RecordError(
                "schema_version",
                f"expected {SCHEMA_VERSION}, got {v!r}"
                + (
                    " (read older records with load_record, which upgrades them)"
                    if v in SUPPORTED_VERSIONS
                    else ""
                ),
            )
    RECORD_SCHEMA.check(d, "")
    _check_consistency(d)


def validate_paper(paper: Any) -> None:
    """The ``paper`` block alone (recipes can be checked before a long run starts)."""
    PAPER.check(paper, "paper")


def _check_consistency(d: Mapping[str, Any]) -> None:
    """Cross-field rules the types cannot express."""
    cv = d["code_version"]
    if not cv.get("git_sha") and not cv.get("version"):
        raise RecordError("code_version", "needs a git_sha or a distribution version")
    if not d["checkpoint"].get("path") and not d["checkpoint"].get("url"):
        raise RecordError("checkpoint", "needs a path or a url")
    if not d["eval"]["accuracy"]:
        raise RecordError("eval.accuracy", "is empty: at least one column (clean) is needed")
    track, ev = d["track"], d["eval"]
    if "eps" in ev and not math.isclose(ev["eps"], track["eps"], rel_tol=1e-9, abs_tol=1e-12):
        raise RecordError("eval.eps", f"{ev['eps']!r} differs from track.eps {track['eps']!r}")
    if "norm" in ev and ev["norm"] != track["norm"]:
        raise RecordError("eval.norm", f"{ev['norm']!r} differs from track.norm {track['norm']!r}")
    cfg = d["config"]
    if "method" in cfg and cfg["method"] != d["method"]["name"]:
        raise RecordError(
            "config.method", f"{cfg['method']!r} differs from method.name {d['method']['name']!r}"
        )
    train = cfg.get("train")
    if isinstance(train, Mapping):
        for key in ("seed", "epochs"):
            if key in train and train[key] != d[key]:
                raise RecordError(
                    f"config.train.{key}", f"{train[key]!r} differs from {key} {d[key]!r}"
                )


# ------------------------------------------------------------------------ versions, loading


def _upgrade_v1(d: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(d)
    out["schema_version"] = 2
    out.setdefault("started_at", None)
    track = out.get("track")
    if isinstance(track, dict):
        track.setdefault("official", is_official_dataset(track.get("dataset")))
        track.setdefault("description", None)
    out["upgraded_from"] = 1
    return out


_UPGRADES = {1: _upgrade_v1}


def upgrade_record(d: Any) -> dict[str, Any]:
    """A record of any supported schema version as a current-version dict (not validated)."""
    if not isinstance(d, Mapping):
        raise RecordError("", f"a record is a JSON object, got {_kind(d)}")
    if "schema_version" not in d:
        raise RecordError("schema_version", "missing: this is not an ardbench run record")
    v = d["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError("schema_version", f"expected an integer, got {_kind(v)}")
    if v > SCHEMA_VERSION:
        raise RecordError(
            "schema_version",
            f"{v} was written by a newer ardbench; this one (schema {SCHEMA_VERSION}) reads "
            f"versions {', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade ardbench to read it",
        )
    if v not in SUPPORTED_VERSIONS:
        raise RecordError(
            "schema_version",
            f"unknown version {v} (known: {', '.join(map(str, SUPPORTED_VERSIONS))})",
        )
    out = dict(d)
    while out["schema_version"] < SCHEMA_VERSION:
        out = _UPGRADES[out["schema_version"]](out)
    return out


def _record_path(path: str | Path) -> Path:
    path = Path(path)
    return path / RECORD_FILENAME if path.is_dir() else path


def load_record(path: str | Path) -> dict[str, Any]:
    """Read, upgrade (in memory) and validate a record file or a run directory's record."""
    path = _record_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run record at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError("", f"not valid JSON ({exc})", source=path) from None
    try:
        record = upgrade_record(data)
        validate_record(record)
    except RecordError as exc:
        raise exc.at(path) from None
    return record


def find_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
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
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict) or "schema_version" not in data:
                continue
        yield path, load_record(path)


# ------------------------------------------------------------------------------------ write


def record_bytes(record: Mapping[str, Any]) -> bytes:
    """The canonical serialisation: sorted keys, 2-space indent, no NaN, trailing newline."""
    return (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def write_record(target: str | Path, record: Mapping[str, Any], *, validate: bool = True) -> Path:
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
    if validate:
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

# Config keys that do not define the computation of a row (provenance, where files live) or
# that are part of the table's own key (dataset, teacher, student), and the seed, which varies
# within a row by design.
_NOT_PROTOCOL = (
    "recipe",
    "paper",
    "data_dir",
    "download",
    "device",
    "dataset",
    "teacher",
    "student",
)


def protocol_hash(record: Mapping[str, Any]) -> str:
    """Hash of the record's resolved config without the seed and provenance: runs with the same
    hash differ only by seed, so they are one leaderboard row (12 hex digits)."""
    cfg = computation_dict(copy.deepcopy(dict(record.get("config") or {})))
    for key in _NOT_PROTOCOL:
        cfg.pop(key, None)
    if isinstance(cfg.get("train"), dict):
        cfg["train"].pop("seed", None)
    if isinstance(cfg.get("eval"), dict):
        # batch sizes move AA only via its random inits (and no other column): same row
        cfg["eval"].pop("batch_size", None)
        cfg["eval"].pop("aa_batch_size", None)
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


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
