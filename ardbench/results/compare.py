"""A run, or a method's aggregate, against its leaderboard table (``ardbench compare``).

For every row of the pair's table and every column, the delta is ``ours - row mean`` in
percentage points. A delta is flagged as **inside seed noise** when ``|delta| <= 2 sigma``:

- sigma combines the seed standard deviations (ddof = 1) that exist: the row's when the row
  has >= 2 runs in that column, ours when we are an aggregate of >= 2 runs
  (``sigma = sqrt(std_row^2 + std_ours^2)``), never below one test point (``100 / n`` pp:
  two seeds that agree exactly say little about the spread);
- when neither side has two runs, sigma is a documented default: the larger of
  :data:`DEFAULT_SEED_STD_PP` (0.5 pp, a typical seed-to-seed std of CIFAR-scale robust
  accuracy) and the binomial standard deviation of an accuracy measured on ``n`` test points,
  ``100 * sqrt(p (1 - p) / n)`` (which dominates on small evaluation sets, where one seed's
  number moves by several points).

The compared run is never part of the table it is compared with: records with its run id are
left out of the leaderboard side (the output says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from .grouping import TableKey, describe_key, table_key
from .records import RecordLike, as_record
from .schema import COLUMNS, Record
from .tables import COLUMN_TITLES, DASH, Row, Stat, Table, build_tables

__all__ = [
    "DEFAULT_SEED_STD_PP",
    "NOISE_SIGMAS",
    "Comparison",
    "Delta",
    "NoTableError",
    "RowComparison",
    "compare_method",
    "compare_record",
    "delta",
    "render_comparison",
]

DEFAULT_SEED_STD_PP = 0.5
NOISE_SIGMAS = 2.0


class NoTableError(LookupError):
    """Nothing to compare with: the leaderboard has no table (or no other row) for the pair."""


@dataclass(frozen=True)
class Delta:
    """``ours - row`` for one column, in percentage points, and the noise band used."""

    delta_pp: float | None  # None: a side did not evaluate this column
    noise_pp: float | None  # the band: NOISE_SIGMAS * sigma
    inside_noise: bool
    sigma_from: str  # "seeds" or "default"


@dataclass
class RowComparison:
    row: Row
    deltas: dict[str, Delta]
    same_row: bool  # the row with ours's row key (method, recipe, row hash, checkpoint)


@dataclass
class Comparison:
    subject: str  # "run X (method, recipe, seed s)" / "method NAME (recipe, k runs)"
    method: str
    recipe: str
    row_hash: str  # ours's row hash (ardbench.protocols.identity.row_hash)
    ours: dict[str, Stat]
    ours_runs: int
    n_examples: int
    table: Table
    rows: list[RowComparison] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    ours_epochs: tuple[int, ...] = ()

    @property
    def protocol(self) -> str:
        """The row hash, by the name it had when it was called a protocol hash."""
        return self.row_hash


def delta(ours: Stat, row: Stat, n_examples: int) -> Delta:
    """The delta of one column and whether it is inside seed noise (see the module doc)."""
    if ours.mean is None or row.mean is None:
        return Delta(None, None, False, "")
    d = 100 * (ours.mean - row.mean)
    stds = [s for s in (row.std, ours.std) if s is not None]
    if stds:
        # floored at one test point: two seeds that agree exactly say little about the spread
        sigma = max(100 * math.sqrt(sum(s * s for s in stds)), 100 / max(n_examples, 1))
        source = "seeds"
    else:
        p = min(max((ours.mean + row.mean) / 2, 0.0), 1.0)
        binomial = 100 * math.sqrt(p * (1 - p) / max(n_examples, 1))
        sigma = max(DEFAULT_SEED_STD_PP, binomial)
        source = "default"
    band = NOISE_SIGMAS * sigma
    return Delta(d, band, abs(d) <= band + 1e-12, source)


def _compare(
    subject: str, ours_row: Row, n_examples: int, table: Table, excluded: list[str]
) -> Comparison:
    comp = Comparison(
        subject=subject,
        method=ours_row.method,
        recipe=ours_row.recipe_cell,
        row_hash=ours_row.row_hash,
        ours=ours_row.stats,
        ours_runs=ours_row.runs,
        n_examples=n_examples,
        table=table,
        excluded=excluded,
        ours_epochs=ours_row.epochs,
    )
    for row in table.rows:
        n = min([n_examples, *row.n_examples])
        comp.rows.append(
            RowComparison(
                row=row,
                deltas={c: delta(ours_row.stats[c], row.stats[c], n) for c in COLUMNS},
                same_row=row.key == ours_row.key,
            )
        )
    return comp


def _table_for(
    key: TableKey, leaderboard: Sequence[Record], exclude: set[str]
) -> tuple[Table | None, list[str]]:
    same_pair = [r for r in leaderboard if table_key(r) == key]
    excluded = sorted(r.run_id for r in same_pair if r.run_id in exclude)
    kept = [r for r in same_pair if r.run_id not in exclude]
    tables = build_tables(kept)
    return (tables[0] if tables else None), excluded


def compare_record(record: RecordLike, leaderboard: Sequence[RecordLike]) -> Comparison:
    """One run against every row of its pair's table (the run itself left out of the table)."""
    record = as_record(record)
    key = table_key(record)
    table, excluded = _table_for(key, [as_record(r) for r in leaderboard], {record.run_id})
    if table is None:
        raise NoTableError(
            f"the leaderboard has no other runs for this pair ({describe_key(key)}); "
            "nothing to compare with"
        )
    (ours,) = build_tables([record])[0].rows
    subject = f"run {record.run_id} ({ours.method}, {ours.recipe_cell}, seed {record.seed})"
    return _compare(subject, ours, record.eval.n_examples, table, excluded)


def compare_method(
    name: str,
    leaderboard: Sequence[RecordLike],
    *,
    candidates: Sequence[RecordLike] | None = None,
    pair: str | None = None,
) -> list[Comparison]:
    """The aggregate of method ``name`` (its runs in ``candidates``, by default the
    leaderboard's own) against the other rows of each pair table it appears in; ``pair`` (a
    table name ``<track-slug>/<teacher-slug>__<student>``, with or without ``.md``) picks one."""
    board = [as_record(r) for r in leaderboard]
    pool = board if candidates is None else [as_record(r) for r in candidates]
    mine = [r for r in pool if r.method.name == name]
    if not mine:
        known = sorted({r.method.name for r in pool})
        raise NoTableError(
            f"no runs of method {name!r} found (methods with runs: {', '.join(known) or 'none'})"
        )
    wanted = None if pair is None else pair.strip().removesuffix(".md").strip("/")
    out = []
    for ours_table in build_tables(mine):
        key = table_key(ours_table.records[0])
        mine_ids = {r.run_id for r in ours_table.records}
        table, excluded = _table_for(key, board, mine_ids)
        names = {ours_table.name} | ({table.name} if table else set())
        if wanted is not None and not any(
            n == wanted or n.endswith("/" + wanted) or wanted.endswith(n) for n in names
        ):
            continue
        if table is None:
            continue
        for ours in ours_table.rows:
            n = min(ours.n_examples)
            runs = f"{ours.runs} run" + ("s" if ours.runs != 1 else "")
            subject = f"method {name} ({ours.recipe_cell}, {runs})"
            out.append(_compare(subject, ours, n, table, excluded))
    if not out:
        where = f" in table {pair!r}" if pair else ""
        raise NoTableError(f"no leaderboard table with other rows to compare {name!r} with{where}")
    return out


# ---------------------------------------------------------------------------------- output


def _abs_cell(s: Stat) -> str:
    if s.mean is None:
        return DASH
    return f"{100 * s.mean:.2f}" + (f" ± {100 * s.std:.2f}" if s.std is not None else "")


def _delta_cell(d: Delta) -> Text:
    if d.delta_pp is None:
        return Text(DASH, style="dim")
    text = f"{d.delta_pp:+.2f}"
    if d.inside_noise:
        return Text(text + " ≈", style="dim")
    return Text(text, style="green" if d.delta_pp > 0 else "red")


def render_comparison(comp: Comparison, console: Console) -> None:
    """A rich table: our absolute numbers, then each row's delta (pp) with the noise flag."""
    columns = [
        c
        for c in COLUMNS
        if comp.ours[c].mean is not None or any(r.row.stats[c].mean is not None for r in comp.rows)
    ]
    # record text is shown as it is: Text() keeps rich from reading "[...]" in it as markup
    table = RichTable(title=Text(f"{comp.subject} vs {comp.table.name}"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("method")
    table.add_column("recipe")
    table.add_column("runs", justify="right")
    for c in columns:
        table.add_column(COLUMN_TITLES[c], justify="right")
    table.add_column("epochs", justify="right")
    table.add_row(
        "",
        Text("ours", style="bold"),
        Text(comp.recipe),
        str(comp.ours_runs),
        *(_abs_cell(comp.ours[c]) for c in columns),
        ", ".join(map(str, comp.ours_epochs)),
    )
    table.add_section()
    for i, rc in enumerate(comp.rows, 1):
        table.add_row(
            str(i),
            Text(rc.row.method + (" (same)" if rc.same_row else "")),
            Text(rc.row.recipe_cell),
            str(rc.row.runs),
            *(_delta_cell(rc.deltas[c]) for c in columns),
            ", ".join(map(str, rc.row.epochs)),
        )
    console.print(table)
    console.print(
        f"Δ = ours − row mean, percentage points. ≈: inside seed noise, |Δ| ≤ {NOISE_SIGMAS:g}σ "
        f"(σ from the seeds of the row and of ours where >= 2 runs, at least one test point; "
        f"otherwise max({DEFAULT_SEED_STD_PP} pp, binomial sd at n = {comp.n_examples})).",
        highlight=False,
    )
    if comp.excluded:
        console.print(
            Text(f"Left out of the table (the runs being compared): {', '.join(comp.excluded)}"),
            highlight=False,
        )
