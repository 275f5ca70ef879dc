"""A table's page: the markdown table's own header (protocol, data, teacher, evaluation, order),
its rows with sortable columns, verification, the paper's figure and cost, and the plot.

The rows and their cells come from :func:`ardbench.results.tables.build_tables` and
:meth:`Stat.cell` (the markdown's text), the ranks from the markdown's ``#`` column as
:func:`ardbench.results.render.render_table` writes it (so tie groups appear here exactly as
there), the prose from the same rendering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..results.render import render_table
from ..results.schema import COLUMNS
from ..results.tables import COLUMN_TITLES, WORST_COLUMNS, Row, Stat, Table
from .cost import row_cost
from .data import RunInfo, SiteData, method_page, row_verification, run_page
from .html import DASH, Cell, esc, html_table, link, page
from .markdown import markdown
from .svg import Point, scatter
from .titles import table_title

__all__ = ["markdown_parts", "render_table_page", "stat_cell"]


def markdown_parts(t: Table) -> tuple[str, list[str], str]:
    """(header markdown, rank cell per row, paper footnotes markdown) of the table's markdown."""
    lines = render_table(t).split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), len(lines))
    header = [
        line
        for line in lines[1:start]
        if not line.startswith("> ")  # the "generated; do not edit" note is for the repository
    ]
    ranks = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        ranks.append(line[1:].split("|", 1)[0].strip())
    first = lines[start][1:].split("|", 1)[0].strip() if start < len(lines) else ""
    if len(ranks) != len(t.rows) or first not in ("#", "Rank"):  # unknown format: the order
        ranks = [str(i) for i in range(1, len(t.rows) + 1)]
    notes: list[str] = []
    if "Paper-reported figures (percent):" in lines:
        i = lines.index("Paper-reported figures (percent):") + 2
        while i < len(lines) and lines[i].startswith("- "):
            notes.append(lines[i])
            i += 1
    return "\n".join(header), ranks, "\n".join(notes)


def stat_cell(stat: Stat, runs: int) -> Cell:
    """Mean ± std as the markdown writes it; sorts by the mean; "(k of n runs)" below."""
    if stat.mean is None:
        return Cell(DASH, sort="", cls="num")
    std = DASH if stat.std is None else f"{100 * stat.std:.2f}"
    text = f'{100 * stat.mean:.2f}<span class="pm"> ± {std}</span>'
    if stat.n != runs:
        text += f'<span class="sub">{stat.n} of {runs} runs</span>'
    return Cell(text, sort=100 * stat.mean, cls="num")


def _paper_cell(row: Row) -> Cell:
    if "aa" not in row.paper:
        return Cell(DASH, sort="", cls="num")
    tag = row.paper_meta.get("tag")
    badge = f' <span class="tag paper" title="how far the figure can be trusted">{esc(tag)}</span>'
    src = row.paper_source or ""
    return Cell(
        f"{row.paper['aa']:.2f}" + (badge if tag else ""),
        sort=row.paper["aa"],
        cls="num",
        title=src,
    )


def _runs_cell(row: Row, runs: Mapping[str, RunInfo], root: str) -> Cell:
    links = [
        link(root + run_page(rid), f"s{seed}", title=rid)
        for rid, seed in zip(row.run_ids, row.seeds, strict=True)
    ]
    return Cell(f"{row.runs}: " + " ".join(links), sort=float(row.runs), cls="num")


def _verified_cell(row: Row, runs: Mapping[str, RunInfo]) -> Cell:
    v = row_verification(row, runs)
    return Cell(f'<span class="tag {v.state}">{v.state}</span>', sort=v.state, title=v.note)


def _head(t: Table, worst: Sequence[str], memory: bool) -> list[tuple[str, str, str]]:
    by = COLUMN_TITLES[t.sort_by]
    head: list[tuple[str, str, str]] = [
        ("#", f"rank by {by}, as the markdown table has it", "num"),
        ("Method", "the method's page: paper, official code, quirks", "text"),
    ]
    for c in COLUMNS:
        tip = f"{COLUMN_TITLES[c]} accuracy, % (mean ± std over the row's runs)"
        head.append((COLUMN_TITLES[c], tip, "num"))
    head += [
        ("AA (paper)", "the published AA figure and its trust tag (source on hover)", "num"),
        ("Verified", "re-evaluated by ardbench verify?", "text"),
        ("Runs", "how many runs (seeds) the row averages; each links to its page", "num"),
        ("Epochs", "training epochs", "num"),
    ]
    for c in worst:
        tip = f"lowest per-class {COLUMN_TITLES[c]} accuracy, % (mean over runs)"
        head.append((f"Worst {COLUMN_TITLES[c]}", tip, "num"))
    head += [
        ("Recipe", "the recipe file (config hash when overrides differ)", "text"),
        ("Wall min", "training wall time per run in minutes, mean over the runs", "num"),
        ("Device", "where the runs trained", "text"),
        ("Images/s", "training images per second, mean over the runs that recorded it", "num"),
    ]
    if memory:
        head.append(
            (
                "Peak MB",
                "peak memory in MB: GPU peak allocation, or the CPU process's peak resident size",
                "num",
            )
        )
    head += [("Code", "code version", "text"), ("Notes", "", "")]
    return head


def _row_cells(
    t: Table, row: Row, rank: str, worst: Sequence[str], memory: bool, data: SiteData
) -> list[Cell]:
    root = "../"
    name = row.method if row.checkpoint == "last" else f"{row.method} ({row.checkpoint})"
    cost = row_cost(row, data.runs)
    cells = [
        Cell(esc(rank), sort=float(t.rows.index(row) + 1), cls="num"),
        Cell(link(root + method_page(row.method), name), sort=name, cls="key"),
        *(stat_cell(row.stats[c], row.runs) for c in COLUMNS),
        _paper_cell(row),
        _verified_cell(row, data.runs),
        _runs_cell(row, data.runs, root),
        Cell(esc(", ".join(map(str, row.epochs))), sort=float(max(row.epochs)), cls="num"),
        *(_worst_cell(row.worst[c]) for c in worst),
        Cell(esc(row.recipe_cell), sort=row.recipe_cell),
        cost.wall,
        Cell(esc(cost.device), sort=cost.device),
        cost.images,
    ]
    if memory:
        cells.append(cost.memory)
    cells += [
        Cell(esc(", ".join(row.code)), sort=", ".join(row.code)),
        Cell(esc("; ".join(row.notes)), cls="notes"),
    ]
    return cells


def _worst_cell(stat: Stat) -> Cell:
    if stat.mean is None:
        return Cell(DASH, sort="", cls="num")
    return Cell(f"{100 * stat.mean:.1f}", sort=100 * stat.mean, cls="num")


def _plot(t: Table, ranks: Sequence[str]) -> str:
    by = t.sort_by
    points = []
    for row, rank in zip(t.rows, ranks, strict=True):
        x, y = row.stats["clean"], row.stats[by]
        if x.mean is None or y.mean is None:
            continue
        name = row.method if row.checkpoint == "last" else f"{row.method} ({row.checkpoint})"
        points.append(
            Point(
                100 * x.mean,
                100 * y.mean,
                100 * (x.std or 0.0),
                100 * (y.std or 0.0),
                name,
                rank,
            )
        )
    title = COLUMN_TITLES[by]
    svg = scatter(points, "Clean accuracy (%)", f"{title} accuracy (%)", f"Clean vs {title}")
    if not svg:
        return ""
    return (
        f"<h2>Clean vs {esc(title)}</h2><figure>{svg}<figcaption>One point per row: mean over "
        f"its runs, bars ± one std across seeds (none with one run). Up and to the right is "
        f"better; the y axis is the column that orders the table ({esc(title)}). A point "
        "without a name is labelled with its rank where names would overlap.</figcaption>"
        "</figure>"
    )


def _explain(t: Table) -> str:
    by = COLUMN_TITLES[t.sort_by]
    return (
        '<div class="explain"><p><strong>How to read a row.</strong> Each row is one method '
        "trained with one recipe under this table's protocol, teacher and student, averaged "
        "over its runs (one per seed; <em>Runs</em> links each run's page). Accuracy columns "
        "are the percentage of the first n test points classified correctly: clean, and under "
        "each attack at the table's ε (higher is better); ± is the standard deviation across "
        f"seeds ({DASH} with one run). Rows are ranked by {esc(by)}. "
        "<em>AA (paper)</em> is the authors' published figure, tagged with how far it can be "
        "trusted; it was measured under their own protocol, not necessarily this one. Click a "
        "column's header to sort by it; click again to reverse.</p><p><em>Verified</em>: "
        '<span class="tag unverified">unverified</span> means no one has re-evaluated the '
        "row's checkpoints yet (<code>ardbench verify</code> files the result beside each "
        "record); the figures are then the runs' own claim.</p></div>"
    )


def render_table_page(t: Table, data: SiteData) -> str:
    header, ranks, notes = markdown_parts(t)
    worst = [c for c in WORST_COLUMNS if any(r.worst[c].mean is not None for r in t.rows)]
    memory = any(
        "peak_memory_mb" in (data.runs[rid].model.hardware.model_extra or {})
        for r in t.rows
        for rid in r.run_ids
    )
    rows = [_row_cells(t, r, k, worst, memory, data) for r, k in zip(t.rows, ranks, strict=True)]
    body = [
        f"<h1>{esc(table_title(t))}</h1>",
        _explain(t),
        html_table(_head(t, worst, memory), rows, cls="board", table_id="board"),
        _plot(t, ranks),
    ]
    if notes:
        body += ["<h2>Paper-reported figures</h2>", markdown(notes)]
    body += [
        "<h2>Protocol, data and evaluation</h2>",
        f'<div class="md">{markdown(header)}</div>',
        "<h2>Downloads</h2>",
        "<p>"
        + link("../data/tables/" + t.name.replace("/", "--") + ".csv", "CSV")
        + " · "
        + link("../data/tables/" + t.name.replace("/", "--") + ".json", "JSON")
        + " · the markdown: <code>leaderboard/"
        + esc(t.relpath)
        + "</code></p>",
    ]
    return page(table_title(t), "\n".join(body), depth=1)
