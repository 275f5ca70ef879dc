"""Ranks that noise can stand behind: rows share a rank where their seeds cannot separate them.

The rule (as LMSYS Chatbot Arena ranks models, "1 + the number of models that are
statistically better"): each row's sort column gets a 95 % interval
``mean ± 1.96 · s / √n`` over its ``n`` runs, and a row's rank is one plus the number of
rows whose interval lies wholly above its own. ``s`` is the larger of the row's own seed std
and the table's pooled seed std of that column (pooled over the rows with two or more seeds,
``√(Σ (n_i − 1) s_i² / Σ (n_i − 1))``): a one-seed row has no std of its own, and three
seeds can understate a method's spread by chance. A table with no multi-seed row has no
measured spread: its rows are listed, not ranked. A row with a failed verification never
ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Z95", "RankInput", "Ranking", "rank_rows"]

Z95 = 1.96


@dataclass(frozen=True)
class RankInput:
    """One row's sort column: mean and sample std over its ``n`` runs (fractions); ``ranks``
    false for a row that may not rank (a failed verification)."""

    mean: float | None
    std: float | None
    n: int
    ranks: bool = True


@dataclass(frozen=True)
class Ranking:
    ranks: tuple[int | None, ...]  # per row; None: not ranked
    pooled_std: float | None  # the table's pooled seed std of the column (fraction)
    pooled_rows: int  # how many rows it pools
    half_widths: tuple[float | None, ...]  # the 95 % half-width of each row's mean


def pooled_std(rows: Sequence[RankInput]) -> tuple[float | None, int]:
    """(pooled sample std, rows pooled) over the rows with two or more runs."""
    multi = [r for r in rows if r.n >= 2 and r.std is not None and r.mean is not None]
    dof = sum(r.n - 1 for r in multi)
    if not dof:
        return None, 0
    return math.sqrt(sum((r.n - 1) * (r.std or 0.0) ** 2 for r in multi) / dof), len(multi)


def rank_rows(rows: Sequence[RankInput]) -> Ranking:
    """Shared ranks for ``rows`` (in any order) by the rule of this module."""
    pooled, pooled_rows = pooled_std(rows)
    half: list[float | None] = []
    for r in rows:
        if r.mean is None or not r.ranks or pooled is None or r.n < 1:
            half.append(None)
            continue
        s = max(r.std or 0.0, pooled)
        half.append(Z95 * s / math.sqrt(r.n))
    ranks: list[int | None] = []
    for i, r in enumerate(rows):
        w = half[i]
        if w is None or r.mean is None:
            ranks.append(None)
            continue
        upper = r.mean + w
        above = 0
        for j, o in enumerate(rows):
            wj = half[j]
            if j != i and wj is not None and o.mean is not None and o.mean - wj > upper:
                above += 1
        ranks.append(1 + above)
    return Ranking(tuple(ranks), pooled, pooled_rows, tuple(half))
