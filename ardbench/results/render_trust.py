"""The parts of a table that say how far to trust it: the shared rank of each row, its
verification state, and the paragraph that states both rules with this table's numbers."""

from __future__ import annotations

from ..protocols.columns import COLUMN_TITLES
from .ranks import Z95
from .tables import Row, Table
from .verified import FAILED, PARTIAL, VERIFIED

__all__ = ["order_text", "rank_cell", "trust_lines", "verified_cell"]


def order_text(t: Table) -> str:
    """How the rows are sorted, and why not by AA where they cannot be."""
    if t.sort_by == "aa":
        return "AA (mean, descending; every run of every ranked row has it)"
    if any(r.stats["aa"].mean is not None for r in t.rows):
        return (
            "PGD-20 (mean, descending): AutoAttack is missing for some runs (cells marked "
            "(k of n runs), or —), and a mean over fewer runs is another quantity, so AA "
            "cannot order the table"
        )
    return "PGD-20 (mean, descending): no row has AutoAttack"


def rank_cell(r: Row) -> str:
    if r.failed:
        return "✗"
    return "–" if r.rank is None else str(r.rank)


def verified_cell(r: Row) -> str:
    """e.g. "✓ 3/3 re-evaluated", "◐ 1/1 re-evaluated (1 partial); not re-evaluated: AA",
    "✗ failed 1/3: reason", "unverified"."""
    vs = r.verifications
    n = len(vs)
    failed = [v for v in vs if v.state == FAILED]
    if failed:
        return f"✗ failed {len(failed)}/{n}: {failed[0].note}"
    done = [v for v in vs if v.state in (VERIFIED, PARTIAL)]
    if not done:
        return "unverified"
    partial = sum(v.state == PARTIAL for v in done)
    mark = "✓" if len(done) == n and not partial else "◐"
    text = f"{mark} {len(done)}/{n} " + " / ".join(sorted({v.how or "re-evaluated" for v in done}))
    if partial:
        text += f" ({partial} partial)"
    checked = set.intersection(*(set(v.columns) for v in done))
    unchecked = [COLUMN_TITLES[c] for c, s in r.stats.items() if s.n and c not in checked]
    if unchecked:
        text += "; not re-evaluated: " + ", ".join(unchecked)
    if len(done) < n:
        text += f"; {n - len(done)} unverified"
    return text


def _rank_text(t: Table) -> str:
    ranking = t.ranking
    by = COLUMN_TITLES[t.sort_by]
    if ranking is None or ranking.pooled_std is None:
        return (
            f"**Ranks.** No row has two seeds, so no seed spread is measured: rows are listed "
            f"by {by}, not ranked (#: –)."
        )
    spread = 100 * ranking.pooled_std
    one = Z95 * spread
    return (
        f"**Ranks.** Rows share a rank where seeds cannot separate them: each row's {by} mean "
        f"gets a 95 % interval, mean ± {Z95} · s / √n over its n runs, where s is the larger "
        f"of the row's own seed std and the table's pooled seed std of {by}, "
        f"{spread:.2f} points (pooled over the {ranking.pooled_rows} rows with two or more "
        f"seeds); a row's rank is 1 + the number of rows whose interval lies wholly above its "
        f"own (Chatbot Arena's rule). A one-seed row's interval is ± {one:.2f} points, a "
        f"three-seed row's at least ± {one / 3**0.5:.2f}. ✗: a failed verification, never "
        "ranked."
    )


def trust_lines(t: Table) -> list[str]:
    """The ranking rule and the verification legend, with this table's figures."""
    states = [v.state for r in t.rows for v in r.verifications]
    counts = ", ".join(
        f"{states.count(s)} {s}"
        for s in (VERIFIED, PARTIAL, "unverified", FAILED)
        if states.count(s)
    )
    bare = sum(r.checkpoint.extra("weights") is None for r in t.records)
    unpublished = (
        f" {bare} of the {len(t.records)} runs publish no weights, so nobody can re-evaluate "
        "them (their rows stay unverified unless re-trained: `ardbench verify --retrain`)."
        if bare
        else ""
    )
    return [
        _rank_text(t),
        "",
        "**Verified.** Whether each run's numbers were checked (`ardbench verify`): re-evaluated "
        "= its published weights (sha256 checked) evaluated again under the record's own "
        "protocol gave the same points in every deterministic column (AutoAttack within 0.5 % "
        "of the points; columns not re-evaluated are named); re-trained = the config trained "
        "again within 3 seed std of the row (the larger of its own and the pooled); partial = a "
        "check on fewer points or columns, or of a one-seed row's re-training; unverified = no check on file (the run's own claim); failed = the "
        f"check disagreed or the record changed after it. This table's runs: {counts}."
        + unpublished,
        "",
    ]
