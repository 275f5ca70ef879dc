"""Validation of a record dict against :mod:`ardbench.results.schema`, and schema versions.

:func:`validate_record` raises :class:`RecordError` naming the first bad field as a dotted path
(``eval.accuracy.pgd20``, ``eval.warnings[0]``): pydantic's first error, its location turned
into that path and its message into the record's words. Besides the types, a record must be
plain JSON everywhere (string keys, no NaN or infinity: what validates can be written; in the
open parts a tuple is accepted and written as a list) and satisfy a few cross-field rules
(the evaluation's eps and norm are the track's...).

Version 1 (what the trainer wrote before records had a schema) lacks ``started_at``,
``track.official`` and ``track.description``; :func:`upgrade_record` upgrades it in memory
(the file on disk is never rewritten: records are immutable). Unknown or newer versions are
rejected with a message that says what to do (upgrade ardbench).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ArdbenchError
from .schema import (
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    UNION_TAGS,
    PaperModel,
    Record,
    describe,
)

__all__ = [
    "RecordError",
    "RecordExistsError",
    "check_model",
    "is_official_dataset",
    "upgrade_record",
    "validate_paper",
    "validate_record",
]


class RecordError(ArdbenchError, ValueError):
    """A record that is not valid; ``field`` is the dotted name of the bad field."""

    def __init__(self, field: str, message: str, *, source: str | Path | None = None) -> None:
        where = f"{source}: " if source is not None else ""
        name = f"record field {field!r}" if field else "record"
        super().__init__(f"{where}{name}: {message}")
        self.field = field
        self.message = message  # without the file and field (ArdbenchError's is the whole line)
        self.source = None if source is None else str(source)

    def at(self, source: str | Path) -> RecordError:
        """The same error, saying which file it came from."""
        return RecordError(self.field, self.message, source=source)


class RecordExistsError(RecordError, FileExistsError):
    """``write_record`` refused to overwrite an existing record."""


def is_official_dataset(spec: str | None) -> bool:
    """True for a registered dataset (``cifar10``, ``digits``... loaded from its own source);
    False for ``npz:`` arrays, which are copies whose identity is only their fingerprint."""
    return bool(spec) and not str(spec).startswith("npz:")


# ---------------------------------------------------------------------------- validation


def _dotted(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as the record's dotted path (list indices as ``[i]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif part not in UNION_TAGS:
            out = f"{out}.{part}" if out else str(part)
    return out


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "record":
        return str(err["msg"])
    if kind == "missing":
        return "missing (a required field)"
    if kind == "extra_forbidden":
        return f"unknown field (known here: {', '.join(sorted(model.model_fields))})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected an object, got {describe(err.get('input'))}"
    if kind == "list_type":
        return f"expected a list, got {describe(err.get('input'))}"
    if kind == "invalid_key" or (kind == "string_type" and err["loc"][-1:] == ("[key]",)):
        return f"keys must be strings, got {err.get('input')!r}"
    return f"{err['msg']} (got {describe(err.get('input'))})"


def check_model(model: type[BaseModel], d: Any) -> None:
    """Validate ``d`` with a pydantic ``model``; :class:`RecordError` naming the first bad
    field as a dotted path."""
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
    record: upgrade older ones with :func:`upgrade_record` first; a typed :class:`Record` is
    judged by its JSON form)."""
    if isinstance(d, Record):
        d = d.to_dict()
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
    try:
        check_model(Record, d)
        found = _not_json(d, "")
    except RecursionError:
        raise RecordError("", "nested too deeply to be a record") from None
    if found:
        raise RecordError(*found)
    _check_consistency(d)
    from .plausible import check_plausible  # (imports this module)

    check_plausible(d)  # what the record claims about itself, recomputed


def validate_paper(paper: Any) -> None:
    """The ``paper`` block alone (recipes can be checked before a long run starts)."""
    check_model(PaperModel, {"paper": paper})
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
        raise RecordError("", f"a record is a JSON object, got {describe(d)}")
    if "schema_version" not in d:
        raise RecordError("schema_version", "missing: this is not an ardbench run record")
    v = d["schema_version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError("schema_version", f"expected an integer, got {describe(v)}")
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
