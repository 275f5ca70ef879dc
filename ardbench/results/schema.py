"""The run record's schema (version 2) as pydantic models, its validation and its upgrades.

A record is everything needed to place a run in a leaderboard table and to say what produced
it (DESIGN.md, principles 3-4). :func:`validate_record` checks a dict against
:class:`RecordModel` and raises :class:`RecordError` naming the first bad field as a dotted
path (``eval.accuracy.pgd20``, ``eval.warnings[0]``). The dict is never replaced by the model:
records stay plain JSON documents, the models only judge them.

Schema version 2 (fields; "?" = may be null or absent; an *id* is
``[A-Za-z0-9][A-Za-z0-9._-]*``, at most 200 characters, because ids become file names):

==================  ========================================================================
schema_version      2
run_id              an id (the run directory's name)
started_at?         ISO-8601 with a timezone (UTC when ardbench writes it)
finished_at         ISO-8601 with a timezone
track               ``dataset`` (spec as run), ``norm`` (Linf | L2), ``eps`` (> 0, the
                    evaluation radius), ``data_fingerprint`` (sha256 of the arrays),
                    ``num_classes``, ``official`` (loaded from the dataset's own source, not an
                    ``npz`` copy), ``description?``, ``test_fingerprint`` (may be absent)
teacher?            ``spec``, ``resolved?``, ``sha256`` (of the weights), ``arch?`` (an id);
                    null without a teacher
student             ``spec``, ``arch`` (an id)
method              ``name`` (lowercase snake_case), ``config`` (resolved method_config),
                    ``config_hash``, ``unofficial``, ``teacher_in_attack``,
                    ``source_sha256?`` (sha256 of the method's source files: a built-in's or an
                    entry point's module file, a contrib method's whole folder; see
                    :func:`ardbench.results.provenance.method_source_sha256`)
recipe?             preset or recipe file that produced the config (provenance)
config              the resolved run config (``RunConfig.to_dict()``)
seed, epochs        the training seed and number of epochs (equal to those in ``config``)
wall_time_s         training time, seconds
code_version        ``git_sha?`` (40 hex), ``dirty?``, ``version?`` (at least a sha or a
                    version). ``dirty`` is true when a tracked file of the checkout was modified
                    or a file of the method's own source is not tracked by git
hardware            ``device`` and whatever else describes the machine
versions            library versions: ``python``, ``torch`` and more (strings or null)
eval                the evaluator's block: ``n_examples``, ``accuracy`` ({column: fraction in
                    [0, 1] or null, or an object of those}), ``eps?``/``norm?`` (equal to the
                    track's), ``settings?``, ``worst_class?``, ``aa_unreliable?``,
                    ``warnings?`` ...
checkpoint          ``path`` and/or ``url``, ``sha256``
paper?              paper-reported figures the recipe reproduces: ``source?`` and, per column
                    (``clean``, ``aa``, ...), a percentage in [0, 100] or null
upgraded_from?      set by :func:`upgrade_record` when it upgraded an older record in memory
==================  ========================================================================

Unknown top-level fields are errors (a typo would otherwise silently drop information);
nested objects accept extra keys so that the evaluator and the hardware block can grow
without a schema bump. Every value anywhere must be plain JSON: strings as keys, no NaN or
infinity (a record that validates can always be written). ``method.source_sha256`` was added
within version 2 as an optional field: records without it load unchanged.

Version 1 (what the trainer wrote before records had a schema) lacks ``started_at``,
``track.official`` and ``track.description``; :func:`upgrade_record` upgrades it in memory
(the file on disk is never rewritten: records are immutable). Unknown or newer versions are
rejected with a message that says what to do.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from datetime import datetime
from numbers import Real
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
COLUMNS = ("clean", "fgsm", "pgd20", "cw", "aa")
NORMS = ("Linf", "L2")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
"""Ids (run ids, architecture names) become file and directory names: no separators, no
leading dot or dash, no characters a shell or a markdown table would read."""

__all__ = [
    "COLUMNS",
    "ID_PATTERN",
    "NORMS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "RecordError",
    "RecordExistsError",
    "RecordModel",
    "is_official_dataset",
    "upgrade_record",
    "validate_paper",
    "validate_record",
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


def is_official_dataset(spec: str | None) -> bool:
    """True for a registered dataset (``cifar10``, ``digits``... loaded from its own source);
    False for ``npz:`` arrays, which are copies whose identity is only their fingerprint."""
    return bool(spec) and not str(spec).startswith("npz:")


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
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


# ------------------------------------------------------------------------------ leaf types


def _expect(what: str) -> WrapValidator:
    """pydantic checks the value; this only says what was expected, in the record's words."""

    def wrap(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "record":  # already in our words (a timestamp's own message)
                raise PydanticCustomError("record", first["msg"]) from None
            raise PydanticCustomError(
                "record", "expected {what}, got {got}", {"what": what, "got": _kind(value)}
            ) from None

    return WrapValidator(wrap)


def _timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "record", "expected an ISO-8601 timestamp, got {got}", {"got": repr(value)}
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "record",
            "timestamp {got} has no timezone (write UTC: +00:00)",
            {"got": repr(value)},
        )
    return value


def _pattern(regex: str) -> Any:
    # anchored: pydantic's pattern searches; the rust engine's $ is the very end of the text
    return Field(pattern=f"^(?:{regex})$")


Text = Annotated[StrictStr, Field(min_length=1), _expect("a non-empty string")]
Id = Annotated[
    StrictStr,
    _pattern(ID_PATTERN),
    _expect("an id (letters, digits, '.', '_', '-'; starting with a letter or digit)"),
]
RunId = Annotated[
    StrictStr,
    _pattern(ID_PATTERN),
    _expect("a run id (letters, digits, '.', '_', '-'; starting with a letter or digit)"),
]
Snake = Annotated[StrictStr, _pattern(r"[a-z][a-z0-9_]*"), _expect("a lowercase snake_case name")]
Hex64 = Annotated[
    StrictStr, _pattern(r"[0-9a-f]{64}"), _expect("a sha256 (64 lowercase hex digits)")
]
Hex40 = Annotated[
    StrictStr, _pattern(r"[0-9a-f]{40}"), _expect("a git sha (40 lowercase hex digits)")
]
ConfigHash = Annotated[StrictStr, _pattern(r"[0-9a-f]{8,64}"), _expect("a hex config hash")]
Norm = Annotated[Literal["Linf", "L2"], _expect("one of " + ", ".join(NORMS))]
Bool = Annotated[StrictBool, _expect("true or false")]
Timestamp = Annotated[
    StrictStr, WrapValidator(lambda v, h: _timestamp(h(v))), _expect("an ISO-8601 timestamp")
]
AnyInt = Annotated[int, _expect("an integer")]
Count1 = Annotated[int, Field(ge=1), _expect("an integer >= 1")]
Count0 = Annotated[int, Field(ge=0), _expect("an integer >= 0")]
Classes = Annotated[int, Field(ge=2), _expect("an integer >= 2")]
Eps = Annotated[float, Field(gt=0), _expect("eps > 0")]
Seconds = Annotated[float, Field(ge=0), _expect("a number >= 0")]
Fraction = Annotated[
    float, Field(ge=0, le=1), _expect("an accuracy as a fraction in [0, 1] (or null)")
]
Percent = Annotated[float, Field(ge=0, le=100), _expect("a percentage in [0, 100]")]


def _fractions_branch(value: Any) -> str:
    return "<object>" if isinstance(value, Mapping) else "<fraction>"


# A fraction in [0, 1], null (not run), or an object of those (e.g. a breakdown). The tags
# name the branch in pydantic's error locations; _dotted drops them.
Fractions = TypeAliasType(
    "Fractions",
    Annotated[
        Annotated[dict[str, "Fractions"], Tag("<object>")]
        | Annotated[Fraction | None, Tag("<fraction>")],
        Discriminator(_fractions_branch),
    ],
)


# ---------------------------------------------------------------------------------- models


class _Open(BaseModel):
    """A nested object: known fields are checked, other keys may hold any JSON value."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class Track(_Open):
    dataset: Text
    norm: Norm
    eps: Eps
    data_fingerprint: Hex64
    num_classes: Classes
    official: Bool
    description: Text | None = None
    test_fingerprint: Hex64 = None  # may be absent, never null


class Teacher(_Open):
    spec: Text
    sha256: Hex64
    resolved: Text | None = None
    arch: Id | None = None


class Student(_Open):
    spec: Text
    arch: Id


class Method(_Open):
    name: Snake
    config: dict[str, Any]
    config_hash: ConfigHash
    unofficial: Bool
    teacher_in_attack: Bool
    source_sha256: Hex64 | None = None


class CodeVersion(_Open):
    git_sha: Hex40 | None = None
    dirty: Bool | None = None
    version: Text | None = None


class Hardware(_Open):
    device: Text


class Versions(_Open):
    __pydantic_extra__: dict[str, Text | None]  # every other library: a version or null
    python: Text
    torch: Text


class Eval(_Open):
    n_examples: Count1
    accuracy: dict[str, Fractions]
    eps: Eps = None
    norm: Norm = None
    settings: dict[str, Any] = None
    worst_class: dict[str, Fractions] = None
    aa_unreliable: Bool = None
    warnings: list[Text] = None


class Checkpoint(_Open):
    sha256: Hex64
    path: Text | None = None
    url: Text | None = None


class Paper(_Open):
    source: Text | None = None
    clean: Percent | None = None
    fgsm: Percent | None = None
    pgd20: Percent | None = None
    cw: Percent | None = None
    aa: Percent | None = None


class RecordModel(BaseModel):
    """A current-version record. Fields declared ``= None`` may be absent; ``Optional`` ones
    may be null."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    schema_version: AnyInt
    run_id: RunId
    finished_at: Timestamp
    track: Track
    teacher: Teacher | None
    student: Student
    method: Method
    config: dict[str, Any]
    seed: Count0
    epochs: Count1
    wall_time_s: Seconds
    code_version: CodeVersion
    hardware: Hardware
    versions: Versions
    eval: Eval
    checkpoint: Checkpoint
    started_at: Timestamp | None = None
    recipe: Text | None = None
    paper: Paper | None = None
    upgraded_from: Count1 = None


class _PaperOnly(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    paper: Paper | None


_TAGS = frozenset({"<object>", "<fraction>"})


# ---------------------------------------------------------------------------- validation


def _dotted(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as the record's dotted path (list indices as ``[i]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif part not in _TAGS:
            out = f"{out}.{part}" if out else str(part)
    return out


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "record":
        return err["msg"]
    if kind == "missing":
        return "missing (a required field)"
    if kind == "extra_forbidden":
        return f"unknown field (known here: {', '.join(sorted(model.model_fields))})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected an object, got {_kind(err.get('input'))}"
    if kind == "list_type":
        return f"expected a list, got {_kind(err.get('input'))}"
    if kind == "invalid_key" or (kind == "string_type" and err["loc"][-1:] == ("[key]",)):
        return f"keys must be strings, got {err.get('input')!r}"
    return f"{err['msg']} (got {_kind(err.get('input'))})"


def _check(model: type[BaseModel], d: Any) -> None:
    try:
        model.model_validate(d)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "invalid_key":  # the key itself is the problem: name its object
            loc = loc[:-1]
        elif loc[-1:] == ("[key]",):
            loc = loc[:-2]
        raise RecordError(_dotted(loc), _message(err, model)) from None


def _not_json(value: Any, path: str) -> tuple[str, str] | None:
    """(path, why) of the first value in the open parts of a record that JSON cannot hold
    exactly; the typed fields are already checked by pydantic."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"{value!r} is not a JSON number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                return path, f"keys must be strings, got {k!r}"
            found = _not_json(v, f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _not_json(v, f"{path}[{i}]")
            if found:
                return found
        return None
    return path, f"{type(value).__name__} is not a JSON value"


def validate_record(d: Any) -> None:
    """Raise :class:`RecordError` naming the first bad field of ``d`` (a current-version
    record: upgrade older ones with :func:`upgrade_record` first)."""
    if isinstance(d, Mapping) and "schema_version" in d:
        v = d["schema_version"]
        if v != SCHEMA_VERSION or isinstance(v, bool):
            raise RecordError(
                "schema_version",
                f"expected {SCHEMA_VERSION}, got {v!r}"
                + (
                    " (read older records with load_record, which upgrades them)"
                    if v in SUPPORTED_VERSIONS and not isinstance(v, bool)
                    else ""
                ),
            )
    if not isinstance(d, dict) and isinstance(d, Mapping):
        d = dict(d)
    _check(RecordModel, d)
    found = _not_json(d, "")
    if found:
        raise RecordError(*found)
    _check_consistency(d)


def validate_paper(paper: Any) -> None:
    """The ``paper`` block alone (recipes can be checked before a long run starts)."""
    _check(_PaperOnly, {"paper": paper})
    found = _not_json(paper, "paper")
    if found:
        raise RecordError(*found)


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


# ------------------------------------------------------------------------------- versions


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
