"""The leaderboard directory: collect the records, write the tables, ``--check`` them, and
``--add`` records and ``--attach`` later evaluations (:mod:`ardbench.results.later_eval`).

Layout of the output directory (``ardbench leaderboard --out DIR``, default ``leaderboard/``)::

    DIR/README.md                 index of every table (:func:`~ardbench.results.render.render_index`)
    DIR/<table relpath>           one table per key (:mod:`ardbench.results.grouping`)
    DIR/runs/<table>/<run_id>.json   the records (``--add``), beside their table's name

The pipeline: :func:`collect_records` (validated, one per run id, later evaluations merged) ->
:func:`ardbench.results.tables.build_tables` -> :mod:`ardbench.results.render`. ``--check``
renders in memory and lists every file that differs, is missing, or is a stale table (one the
manifest ``DIR/.ardbench-generated`` lists that the records no longer give).
Every file is written through :mod:`ardbench.io` (atomic; records never over another).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..io import write_text_atomic
from .generated import MANIFEST, manifest_text, prune_empty_dirs, stale_files
from .grouping import eval_split, record_relpath
from .later_eval import later_eval_path, load_later_eval, merge_later_eval
from .records import (
    RECORD_FILENAME,
    RecordError,
    find_records,
    load_record,
    record_bytes,
    write_record,
)
from .render import render_leaderboard
from .schema import Record
from .verified import collect_verifications

__all__ = [
    "add_records",
    "check_leaderboard",
    "collect_records",
    "write_leaderboard",
]


# ----------------------------------------------------------------------------- collecting


def collect_records(root: str | Path) -> list[Record]:
    """Every record under ``root`` (see :func:`ardbench.records.find_records`), validated,
    one per run id, sorted by run id, with its later evaluation merged in where one is filed
    beside it (:mod:`ardbench.later_eval`). The same run found twice (a run directory and its copy
    in ``leaderboard/runs``) counts once; two different records with one run id are an error."""
    seen: dict[str, tuple[Path, Record]] = {}
    later: dict[str, Path] = {}
    for path, record in find_records(root):
        rid = record.run_id
        extra = later_eval_path(path, rid)
        if extra.is_file():
            if rid in later and later[rid].read_bytes() != extra.read_bytes():
                raise RecordError(
                    "", f"two different later evaluations of run {rid!r}", source=extra
                )
            later[rid] = extra
        if rid in seen:
            other_path, other = seen[rid]
            if record_bytes(other) != record_bytes(record):
                raise RecordError(
                    "run_id",
                    f"{rid!r} is also the run id of a different record at {other_path}",
                    source=path,
                )
            continue
        seen[rid] = (path, record)
    out = []
    for rid in sorted(seen):
        record = seen[rid][1]
        if rid in later:  # columns the record lacks, from a later evaluation of its checkpoint
            ev = load_later_eval(later[rid])
            record = merge_later_eval(record, ev, source=later[rid])
        out.append(record)
    return out


# --------------------------------------------------------------------------- write / check


def _expected(runs_dir: Path) -> dict[str, str]:
    """Every generated file: the tables, the index and the manifest that lists them."""
    records = collect_records(runs_dir)
    expected = render_leaderboard(records, collect_verifications(runs_dir, records))
    expected[MANIFEST] = manifest_text(expected)
    return expected


def check_leaderboard(runs_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Problems that make the committed tables differ from what the records give (empty when
    up to date): ``differs: PATH``, ``missing: PATH``, ``extra: PATH`` (a stale generated file)."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    expected = _expected(runs_dir)
    problems = []
    for rel, text in expected.items():
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"missing: {path}")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"differs: {path}")
    for rel in stale_files(out_dir, runs_dir, expected):
        problems.append(f"extra: {out_dir / rel}")
    return problems


def write_leaderboard(runs_dir: str | Path, out_dir: str | Path) -> dict[str, list[str]]:
    """Render every table from the records under ``runs_dir`` into ``out_dir``; files whose
    content is unchanged are not touched; stale tables are removed: only those the previous
    manifest lists (:mod:`ardbench.results.generated`), never a file ardbench did not write.
    Returns ``{"written": [...], "unchanged": [...], "removed": [...]}`` (relative paths)."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    expected = _expected(runs_dir)
    stale = stale_files(out_dir, runs_dir, expected)  # listed by the manifest being replaced
    report: dict[str, list[str]] = {"written": [], "unchanged": [], "removed": []}
    for rel, text in expected.items():
        path = _inside(out_dir, rel)
        if path.is_file() and path.read_bytes() == text.encode("utf-8"):
            report["unchanged"].append(rel)
            continue
        write_text_atomic(path, text)
        report["written"].append(rel)
    for rel in stale:
        (out_dir / rel).unlink(missing_ok=True)
        report["removed"].append(rel)
    prune_empty_dirs(out_dir, report["removed"])
    return report


def add_records(sources: Iterable[str | Path], runs_dir: str | Path) -> list[tuple[Path, str]]:
    """Copy run records (a run directory or a record file) into the leaderboard's runs
    directory as ``<track>/<teacher>__<student>/<run_id>.json`` (checkpoints stay behind).
    Returns (destination, "added" | "already there") per source; a different record under the
    same name is an error (records are immutable). Every source is read and validated before
    anything is written; runs evaluated on a training holdout are refused (they select
    hyper-parameters; the leaderboard holds test-set results)."""
    runs_dir = Path(runs_dir)
    loaded = []
    for src in sources:
        src = Path(src)
        path = src / RECORD_FILENAME if src.is_dir() else src
        record = load_record(path)
        if eval_split(record) != "test":
            raise RecordError(
                "eval.split",
                f"{record.eval.extra('split')!r}: a run evaluated on held-out training "
                "examples is a selection run, not a leaderboard result; rerun without "
                "train.holdout to evaluate on the test set",
                source=path,
            )
        loaded.append(record)
    out = []
    for record in loaded:
        dest = _inside(runs_dir, record_relpath(record))
        if dest.is_file():
            if record_bytes(load_record(dest)) != record_bytes(record):
                raise RecordError(
                    "run_id", "a different record with this run id exists", source=dest
                )
            out.append((dest, "already there"))
            continue
        write_record(dest, record)
        out.append((dest, "added"))
    return out


def _inside(root: Path, rel: str | Path) -> Path:
    """``root / rel``, refusing a path that would leave ``root`` (generated names never do:
    :mod:`ardbench.results.grouping` builds them from slugs; this keeps it so)."""
    path = root / rel
    base = root.resolve()
    if base not in path.resolve().parents:
        raise RecordError("", f"refusing to write {path}: outside {root}")
    return path
