"""Later evaluations of a recorded run's checkpoint: the columns its record lacks.

A run's record is immutable, and its end-of-run evaluation usually skips AutoAttack (hours
on a large test set). To add such a column afterwards::

    ardbench eval run:RUN_ID --dataset SPEC --eps 8/255 --attacks clean,aa --json E.json
    ardbench leaderboard --attach E.json

``--attach`` finds the record whose checkpoint has the sha256 of the model ``E.json``
evaluated, checks that the evaluation is of the same points under the same threat model
(the data fingerprint, or the fingerprint of the test arrays alone when the evaluation loaded
only them; the first n test points; norm, eps; the record evaluated on the test set),
and files ``E.json`` unchanged as ``<run_id>.eval.json`` beside the record (never overwriting a
different one). The leaderboard then merges it in: the columns the record lacks are taken
from the later evaluation, with their settings; the record's own numbers are never replaced;
the row says which columns came later. A second later evaluation of the same run is refused
(one file per run keeps every number traceable to one command).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .records import (
    RecordError,
    RecordLike,
    as_record,
    find_records,
    read_json,
    write_bytes_exclusive,
)
from .schema import Record
from .validate import check_model

__all__ = [
    "SUFFIX",
    "attach_later_evals",
    "later_eval_path",
    "load_later_eval",
    "merge_later_eval",
]

SUFFIX = ".eval.json"


def later_eval_path(record_path: Path, run_id: str) -> Path:
    """Where the later evaluation of ``run_id`` lives: beside its record file."""
    return Path(record_path).parent / f"{run_id}{SUFFIX}"


class _LaterEvalBlocks(BaseModel):
    """The blocks of an ``ardbench eval --json`` file that a merge reads (their values are
    checked again as part of the merged record)."""

    model_config = ConfigDict(strict=True, extra="allow")

    settings: dict[str, Any] | None = None
    worst_class: dict[str, Any] | None = None
    versions: dict[str, Any] | None = None
    warnings: list[str] | None = None


def load_later_eval(path: Path) -> dict[str, Any]:
    """An ``ardbench eval --json`` file, checked for the blocks a merge reads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file {path}")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("accuracy"), dict):
        raise RecordError(
            "accuracy", "not an `ardbench eval --json` result (no accuracy block)", source=path
        )
    for key in ("model", "data"):
        if not isinstance(data.get(key), dict):
            raise RecordError(
                key,
                "missing: write the file with `ardbench eval MODEL_SPEC --json OUT` (its "
                "model and data blocks identify what was evaluated)",
                source=path,
            )
    try:
        check_model(_LaterEvalBlocks, data)
    except RecordError as exc:
        raise exc.at(path) from None
    return data


def _check_data(record: Record, ev: Mapping[str, Any]) -> list[str]:
    """Why ``ev``'s points are not the record's: another model, other data, another threat
    model or another number of points."""
    problems = []
    track, n = record.track, record.eval.n_examples
    sha = ev["model"].get("sha256") or ""
    if sha != record.checkpoint.sha256:
        problems.append(
            f"model sha256 {str(sha)[:12]} is not the record's checkpoint "
            f"{record.checkpoint.sha256[:12]}"
        )
    data = ev["data"]
    same_data = data.get("fingerprint") == track.data_fingerprint
    test_fp = track.test_fingerprint
    same_test = test_fp is not None and data.get("test_fingerprint") == test_fp
    if not (same_data or same_test):
        problems.append(
            f"data fingerprint {str(data.get('fingerprint'))[:12]} is not the track's "
            f"{track.data_fingerprint[:12]}"
            + (
                f", nor its test fingerprint {str(data.get('test_fingerprint'))[:12]} the "
                f"record's {test_fp[:12]} (other test points)"
                if test_fp
                else " (another dataset or copy; this record predates test fingerprints, so "
                "evaluate with its own dataset spec)"
            )
        )
    if ev.get("norm") != track.norm:
        problems.append(f"norm {ev.get('norm')} is not the track's {track.norm}")
    eps = ev.get("eps")
    if not isinstance(eps, (int, float)) or not math.isclose(eps, track.eps, rel_tol=1e-9):
        problems.append(f"eps {eps} is not the track's {track.eps}")
    if ev.get("n_examples") != n:
        problems.append(f"{ev.get('n_examples')} points, the record {n} (use --n-examples {n})")
    return problems


def _check(record: Record, ev: Mapping[str, Any]) -> list[str]:
    """Why ``ev`` is not a later evaluation of ``record``'s checkpoint on the same points."""
    problems = []
    if record.eval.extra("split") not in (None, "test"):
        problems.append("the record was evaluated on held-out training examples, not the test set")
    problems += _check_data(record, ev)
    if not [c for c in ev["accuracy"] if c not in record.eval.accuracy]:
        problems.append(
            "it adds no column the record lacks (the record has "
            f"{', '.join(sorted(record.eval.accuracy))})"
        )
    return problems


def merge_later_eval(
    record: RecordLike, ev: Mapping[str, Any], source: str | Path | None = None
) -> Record:
    """A copy of ``record`` with the columns it lacks taken from the later evaluation ``ev``
    (accuracy, worst class, settings; AutoAttack's reliability flag, breakdown and warnings),
    and ``eval.later_eval`` saying which columns came from where."""
    rec = as_record(record)
    problems = _check(rec, ev)
    if problems:
        raise RecordError(
            "", "not a later evaluation of this record: " + "; ".join(problems), source=source
        )
    out = rec.to_dict()  # a fresh copy: the record itself is never changed
    e = out["eval"]
    added = sorted(c for c in ev["accuracy"] if c not in e["accuracy"])
    for c in added:
        e["accuracy"][c] = ev["accuracy"][c]
        for block in ("settings", "worst_class"):
            if c in (ev.get(block) or {}):
                e.setdefault(block, {})[c] = copy.deepcopy(ev[block][c])
    if "aa" in added:
        e["aa_unreliable"] = bool(ev.get("aa_unreliable", False))
        e["aa_breakdown"] = copy.deepcopy(ev.get("aa_breakdown") or {})
        e["warnings"] = list(e.get("warnings") or []) + [
            w for w in ev.get("warnings") or [] if w.startswith(("autoattack:", "aa:"))
        ]
    e["later_eval"] = {
        "columns": added,
        "file": f"{rec.run_id}{SUFFIX}",
        "versions": copy.deepcopy(ev.get("versions") or {}),
    }
    try:
        return as_record(out)
    except RecordError as exc:
        raise exc if source is None else exc.at(source) from None


def attach_later_evals(
    sources: Iterable[str | Path], runs_dir: str | Path
) -> list[tuple[Path, str]]:
    """File each evaluation JSON beside the record of the checkpoint it evaluated (see the
    module docstring). Returns (destination, "attached" | "already there") per source; every
    source is checked before anything is written."""
    by_sha: dict[str, list[tuple[Path, Record]]] = {}
    for path, record in find_records(runs_dir):
        by_sha.setdefault(record.checkpoint.sha256, []).append((path, record))
    plan = []
    for src in sources:
        src = Path(src)
        ev = load_later_eval(src)
        matches = by_sha.get(str(ev["model"].get("sha256")), [])
        if not matches:
            raise RecordError(
                "model.sha256",
                f"no record under {runs_dir} has a checkpoint with sha256 "
                f"{str(ev['model'].get('sha256'))[:12]}: evaluate the run's own last-epoch "
                "model (`ardbench eval run:RUN_ID ...`) and add its record first (--add)",
                source=src,
            )
        path, record = matches[0]
        merge_later_eval(record, ev, source=src)  # raises if it does not fit
        plan.append((src, later_eval_path(path, record.run_id)))
    out = []
    for src, dest in plan:
        blob = src.read_bytes()
        if dest.is_file():
            if dest.read_bytes() != blob:
                raise RecordError(
                    "", "a different later evaluation of this run is already filed", source=dest
                )
            out.append((dest, "already there"))
            continue
        write_bytes_exclusive(dest, blob)  # whole file or nothing, never over another
        out.append((dest, "attached"))
    return out
