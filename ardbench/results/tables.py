"""Records -> a pandas frame -> rows (mean ± std over seeds) -> sorted tables.

Which table a record belongs to and the table's file name come from
:mod:`ardbench.results.grouping`; the markdown from :mod:`ardbench.results.render`.

- **Row** = :func:`~ardbench.results.grouping.row_key` (table, method, recipe, row hash,
  checkpoint): runs that differ only by seed; ``ardbench.results()`` exposes the same
  identity as its ``row_identity`` column. Runs of a recipe
  with different overrides are different rows (the recipe cell then shows the config hash).
- Methods that train without a teacher (natural, pgd_at, trades) are the reference rows of
  every teacher's table whose key is otherwise equal; they get a table of their own only where
  no distillation run shares that key.

Cells are mean ± std over the row's runs, in percent with two decimals; std is the sample
standard deviation (ddof = 1) and "—" with one run. Rows are sorted by AA (mean, descending)
only when every run of every ranked row has AA, else by PGD-20; rows whose difference is
within seed noise share a rank (:mod:`ardbench.results.ranks`); a row with a failed
verification (:mod:`ardbench.results.verified`) never ranks and comes last. Records are
ordered by run id before aggregation, so the order of files on disk does not matter. Strings
here are raw record text: rendering escapes them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..protocols.columns import COLUMN_TITLES  # the registry's titles (a live view)
from .grouping import TableKey, TrackKey, row_key, table_key, table_relpath, teacher_label
from .ranks import Ranking, RankInput, rank_rows
from .records import RecordLike, as_record
from .schema import COLUMNS, Eval, Record
from .verified import FAILED, NONE, VERIFIED, Verification

__all__ = [
    "COLUMN_TITLES",
    "DASH",
    "Row",
    "Stat",
    "Table",
    "build_tables",
    "records_frame",
]

DASH = "—"
# the robust-fairness papers' worst-class columns (min over classes of per-class accuracy)
WORST_COLUMNS = ("clean", "pgd20", "aa")


def _recipe_label(recipe: str | None) -> str:
    if not recipe:
        return DASH
    m = re.fullmatch(r"(?:.*/)?baselines/(?:contrib/)?[^/]+/([^/]+)\.ya?ml", recipe)
    if m:
        return m.group(1)
    if recipe.endswith((".yaml", ".yml")):
        return Path(recipe).stem
    return recipe


# ----------------------------------------------------------------------------- the frame


def records_frame(records: Iterable[RecordLike]) -> pd.DataFrame:
    """One row per record and checkpoint: the grouping keys, display fields and accuracy
    columns (NaN where a column was not evaluated)."""
    rows = []
    for r in sorted((as_record(r) for r in records), key=lambda r: r.run_id):
        for kind, ev in r.checkpoint_evals():
            rows.append(_frame_row(r, kind, ev))
    return pd.DataFrame(rows)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _frame_row(r: Record, kind: str, ev: Eval) -> dict[str, Any]:
    key = row_key(r, kind)
    paper = r.paper.to_dict() if r.paper is not None else {}
    row: dict[str, Any] = {
        "run_id": r.run_id,
        "key": key.table,
        "row": key,
        "teacher_sha": r.teacher_sha,
        "method": key.method,
        "recipe": key.recipe,
        "row_hash": key.row_hash,
        "seed": r.seed,
        "epochs": r.epochs,
        "n_examples": ev.n_examples,
        "code": r.code_version.label,
        "unofficial": r.method.unofficial,
        "teacher_in_attack": r.method.teacher_in_attack,
        "aa_unreliable": ev.is_aa_unreliable,
        "compliance_failed": ev.failed_compliance,
        "paper_json": json.dumps(paper, sort_keys=True) if paper else "",
        "later_cols": ev.later_columns,
        "checkpoint": kind,
        "extras": "; ".join(
            f"{name}: {teacher_label(t.spec)} ({t.sha256[:8]})"
            for name, t in sorted((r.extra_teachers or {}).items())
        ),
    }
    for col in COLUMNS:
        v = ev.column(col)
        row[f"acc_{col}"] = _nan(v)
        row[f"worst_{col}"] = _nan(ev.worst(col) if v is not None else None)
        row[f"paper_{col}"] = _nan(r.paper.figure(col) if r.paper is not None else None)
    return row


# ----------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stat:
    """A column of a row: mean and sample std (ddof=1) over ``n`` runs, as fractions."""

    mean: float | None
    std: float | None
    n: int

    def cell(self, runs: int) -> str:
        if self.mean is None:
            return DASH
        text = f"{100 * self.mean:.2f} ± " + (DASH if self.std is None else f"{100 * self.std:.2f}")
        if self.n != runs:
            text += f" ({self.n} of {runs} runs)"
        return text


@dataclass(frozen=True)
class Row:
    method: str
    recipe: str
    row_hash: str  # ardbench.protocols.identity.row_hash: the config part of the row
    run_ids: tuple[str, ...]
    seeds: tuple[int, ...]
    stats: dict[str, Stat]
    epochs: tuple[int, ...]
    n_examples: tuple[int, ...]
    code: tuple[str, ...]
    paper: dict[str, float]
    paper_source: str | None
    notes: tuple[str, ...]
    recipe_cell: str = ""
    worst: dict[str, Stat] = field(default_factory=dict)  # worst-class accuracy per column
    checkpoint: str = "last"
    paper_meta: dict[str, str] = field(default_factory=dict)  # tag, rule, note
    verifications: tuple[Verification, ...] = ()  # per run, in run_ids order
    rank: int | None = None  # shared rank (ardbench.results.ranks); None: not ranked

    @property
    def runs(self) -> int:
        return len(self.run_ids)

    @property
    def failed(self) -> bool:
        """A run of the row failed its verification: the row never ranks."""
        return any(v.state == FAILED for v in self.verifications)

    def verified_columns(self) -> set[str]:
        """The columns every run's verification re-evaluated (empty unless all verified)."""
        if not self.verifications or any(v.state != VERIFIED for v in self.verifications):
            return set()
        return set.intersection(*(set(v.columns) for v in self.verifications))

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The row's identity within its table (:class:`~ardbench.results.grouping.RowKey`
        without the table): method, recipe, row hash, checkpoint."""
        return (self.method, self.recipe, self.row_hash, self.checkpoint)

    @property
    def protocol(self) -> str:
        """The row hash, by the name it had when it was called a protocol hash."""
        return self.row_hash

    def sort_value(self, by: str) -> float | None:
        return self.stats[by].mean


@dataclass
class Table:
    """One table: its key (:func:`ardbench.results.grouping.table_key`), its file
    (:func:`~ardbench.results.grouping.table_relpath`), its records and rows (sorted)."""

    key: TableKey
    relpath: str
    records: list[Record]
    rows: list[Row] = field(default_factory=list)
    sort_by: str = "aa"
    ranking: Ranking | None = None

    @property
    def name(self) -> str:
        return self.relpath[: -len(".md")]

    @property
    def track(self) -> TrackKey:
        return self.key.track

    @property
    def teacher_sha(self) -> str:
        return self.key.teacher_sha

    @property
    def student(self) -> str:
        return self.key.student


def _stat(values: pd.Series) -> Stat:
    vals = values.dropna()
    n = int(vals.count())
    if n == 0:
        return Stat(None, None, 0)
    mean = float(vals.mean())
    std = float(vals.std(ddof=1)) if n >= 2 else None
    return Stat(mean, std, n)


def _teacherless_note(method: str) -> str:
    """The method's own words for a row without a teacher (PeerAiD distils from a peer);
    a reference row for the others and for methods not installed here."""
    from ..methods import METHODS
    from ..registry import UnknownNameError

    try:
        return METHODS.get(method).teacherless_note
    except UnknownNameError:  # a record of a method this installation does not have
        return "no teacher (reference row)"


def _row_notes(g: pd.DataFrame, method: str, with_teacher: bool) -> tuple[str, ...]:
    """What a row's cells do not say: reference row, unofficial, extra teachers, repeats,
    unreliable AA, columns from a later evaluation, failed compliance checks."""
    notes = []
    if (g["teacher_sha"] == "").all() and with_teacher:
        notes.append(_teacherless_note(method))
    if g["unofficial"].any():
        notes.append("unofficial re-implementation")
    if g["teacher_in_attack"].any():
        notes.append("teacher in attack")
    extras = sorted({e for e in g["extras"] if e})
    if extras:
        notes.append("extra teacher " + " | ".join(extras))
    if g["seed"].duplicated().any():
        notes.append("repeated seed")
    if g["aa_unreliable"].any():
        notes.append("AA unreliable (AutoAttack warnings)")
    later = sorted({c for v in g["later_cols"] for c in v})
    if later:
        titles = ", ".join(COLUMN_TITLES[c] for c in COLUMNS if c in later)
        notes.append(f"{titles} from a later evaluation of the same checkpoint")
    failed = sorted({c for v in g["compliance_failed"] for c in v})
    if failed:
        notes.append("failed compliance: " + ", ".join(failed))
    return tuple(notes)


def _row_paper(g: pd.DataFrame) -> tuple[dict[str, float], str | None, dict[str, str]]:
    """(figures, source, tag/rule/note) of the first of the row's papers (in sorted order)."""
    papers = sorted({p for p in g["paper_json"] if p})
    if not papers:
        return {}, None, {}
    first = json.loads(papers[0])
    paper = {c: float(first[c]) for c in COLUMNS if isinstance(first.get(c), (int, float))}
    source = first.get("source") if isinstance(first.get("source"), str) else None
    meta = {k: first[k] for k in ("tag", "rule", "note") if isinstance(first.get(k), str)}
    return paper, source, meta


def _row(
    g: pd.DataFrame, key: Any, with_teacher: bool, verifications: dict[str, Verification]
) -> Row:
    """One row from its runs' frame rows (``key``: their :class:`RowKey`)."""
    g = g.sort_values("run_id", kind="mergesort")
    paper, source, meta = _row_paper(g)
    found = tuple(verifications.get(rid, NONE) for rid in g["run_id"])
    return Row(
        method=key.method,
        recipe=key.recipe,
        row_hash=key.row_hash,
        run_ids=tuple(g["run_id"]),
        seeds=tuple(int(s) for s in g["seed"]),
        stats={c: _stat(g[f"acc_{c}"]) for c in COLUMNS},
        worst={c: _stat(g[f"worst_{c}"]) for c in WORST_COLUMNS},
        checkpoint=key.checkpoint,
        epochs=tuple(sorted({int(e) for e in g["epochs"]})),
        n_examples=tuple(sorted({int(n) for n in g["n_examples"]})),
        code=tuple(sorted(set(g["code"]))),
        paper=paper,
        paper_source=source,
        paper_meta=meta,
        notes=_row_notes(g, key.method, with_teacher)
        + tuple(v.replaced for v in found if v.replaced),
        verifications=found,
    )


def _rows(
    df: pd.DataFrame,
    with_teacher: bool = False,
    verifications: dict[str, Verification] | None = None,
) -> list[Row]:
    """The table's rows: its runs grouped by their row key (:func:`row_key`)."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(df["row"]):
        groups.setdefault(key, []).append(i)
    found = verifications or {}
    out = [_row(df.iloc[idx], key, with_teacher, found) for key, idx in groups.items()]
    # the recipe cell: the recipe's short name, plus the config hash where one method and
    # recipe name cover several rows (runs with different overrides)
    names: dict[tuple[str, str], int] = {}
    for r in out:
        name = (r.method, _recipe_label(r.recipe))
        names[name] = names.get(name, 0) + 1
    return [
        replace(
            r,
            recipe_cell=_recipe_label(r.recipe)
            + (
                f" (config {r.row_hash[:8]})"
                if names[(r.method, _recipe_label(r.recipe))] > 1
                else ""
            ),
        )
        for r in out
    ]


def _sort_rows(rows: list[Row]) -> tuple[list[Row], str, Ranking]:
    """By AA when every run of every ranked row has it, else by PGD-20 (an order that put the
    rows with AA first would rank a row above a stronger one only because it was attacked
    longer, and a mean over fewer seeds is another quantity); failed rows last, unranked; then
    shared ranks (:func:`~ardbench.results.ranks.rank_rows`)."""
    live = [r for r in rows if not r.failed]
    by = "aa" if live and all(r.stats["aa"].n == r.runs for r in live) else "pgd20"

    def key(r: Row) -> tuple[Any, ...]:
        primary = r.stats[by].mean
        secondary = r.stats["pgd20"].mean
        return (
            r.failed,
            primary is None,
            -(primary or 0.0),
            secondary is None,
            -(secondary or 0.0),
            r.method,
            r.recipe,
            r.row_hash,
            r.checkpoint,
        )

    ordered = sorted(rows, key=key)
    ranking = rank_rows(
        [RankInput(r.stats[by].mean, r.stats[by].std, r.stats[by].n, not r.failed) for r in ordered]
    )
    ranked = [replace(r, rank=rank) for r, rank in zip(ordered, ranking.ranks, strict=True)]
    # a wide interval (one seed) can rank a row below one with a lower mean: list by rank
    order = sorted(range(len(ranked)), key=lambda i: (ranked[i].rank is None, ranked[i].rank, i))
    ranking = replace(
        ranking,
        ranks=tuple(ranking.ranks[i] for i in order),
        half_widths=tuple(ranking.half_widths[i] for i in order),
    )
    return [ranked[i] for i in order], by, ranking


def build_tables(
    records: Sequence[RecordLike], verifications: dict[str, Verification] | None = None
) -> list[Table]:
    """Group records into tables (sorted by their file path) with aggregated rows;
    ``verifications`` ({run_id: result}, :func:`~ardbench.results.verified.collect_verifications`)
    mark each run verified, partial, unverified (the default) or failed."""
    groups: dict[TableKey, list[Record]] = {}
    for r in sorted((as_record(r) for r in records), key=lambda r: r.run_id):
        groups.setdefault(table_key(r), []).append(r)
    teacher_keys = [k for k in groups if k.teacher_sha]
    tables = []
    for key, members in groups.items():
        if key.teacher_sha:
            reference = key._replace(teacher_sha="")
            members = sorted(members + groups.get(reference, []), key=lambda r: r.run_id)
        elif any(k._replace(teacher_sha="") == key for k in teacher_keys):
            continue  # reference rows of the teachers' tables, no table of their own
        frame = records_frame(members)
        rows, by, ranking = _sort_rows(_rows(frame, bool(key.teacher_sha), verifications))
        tables.append(Table(key, table_relpath(key, members), members, rows, by, ranking))
    tables.sort(key=lambda t: t.relpath)
    return tables
