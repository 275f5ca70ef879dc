"""The index (every table, with filters by dataset, threat model, teacher, student and method;
retired protocols marked) and the downloads page."""

from __future__ import annotations

from collections.abc import Sequence

from ..results.tables import COLUMN_TITLES, Table
from .data import SiteData, method_page, table_page
from .html import esc, link, page
from .titles import dataset_name, retired, teacher_name, threat_model

__all__ = ["FILTERS", "render_downloads", "render_index"]

# (data attribute, menu label)
FILTERS = (
    ("dataset", "Dataset"),
    ("threat", "Threat model"),
    ("teacher", "Teacher"),
    ("student", "Student"),
    ("method", "Method"),
)


def _facets(t: Table) -> dict[str, list[str]]:
    return {
        "dataset": [dataset_name(t)],
        "threat": [threat_model(t)],
        "teacher": [teacher_name(t)],
        "student": [t.student],
        "method": sorted({r.method for r in t.rows}),
    }


def _menus(tables: Sequence[Table]) -> str:
    values: dict[str, set[str]] = {k: set() for k, _ in FILTERS}
    for t in tables:
        for key, vals in _facets(t).items():
            values[key].update(vals)
    menus = []
    for key, label in FILTERS:
        options = "".join(
            f'<option value="{esc(v)}">{esc(v)}</option>' for v in sorted(values[key])
        )
        menus.append(
            f'<label>{esc(label)}<select data-filter="{key}" id="filter-{key}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    return (
        f'<div class="filters">{"".join(menus)}<button type="button" id="filter-reset">'
        'Show all</button><span id="filter-count"></span></div>'
    )


def _top(t: Table, n: int = 3) -> str:
    by = t.sort_by
    parts = []
    for row in t.rows[:n]:
        mean = row.stats[by].mean
        value = f" {100 * mean:.2f}" if mean is not None else ""
        parts.append(f"{link(method_page(row.method), row.method)}{esc(value)}")
    return f'<span class="sub">by {esc(COLUMN_TITLES[by])}</span>' + "<br>".join(parts)


def _row(t: Table) -> str:
    facets = _facets(t)
    attrs = " ".join(f'data-{k}="{esc("|".join(v))}"' for k, v in facets.items())
    note = retired(t)
    badge = f' <span class="tag retired" title="{esc(note)}">retired</span>' if note else ""
    modified = (
        ' <span class="tag" title="values match no registered protocol">modified</span>'
        if t.key.protocol.modified
        else ""
    )
    cells = [
        link(table_page(t), t.key.protocol.label) + badge + modified,
        esc(dataset_name(t)) + f'<span class="sub">data {esc(t.track.fingerprint[:8])}</span>',
        esc(threat_model(t)),
        esc(teacher_name(t)),
        esc(t.student),
        f'<span data-v="{len(t.rows)}">{len(t.rows)}</span>',
        str(len(t.records)),
        _top(t),
    ]
    tds = "".join(
        f'<td class="num">{c}</td>' if i in (5, 6) else f"<td>{c}</td>" for i, c in enumerate(cells)
    )
    return f"<tr data-filter-row {attrs}>{tds}</tr>"


def render_index(data: SiteData) -> str:
    titles = ("Protocol", "Dataset", "Threat model", "Teacher", "Student", "Rows", "Runs")
    num = ' class="num"'
    head = "".join(f"<th{num if h in ('Rows', 'Runs') else ''}>{h}</th>" for h in titles)
    head += "<th>Top rows</th>"
    rows = "\n".join(_row(t) for t in data.tables)
    body = [
        "<h1>ardbench leaderboard</h1>",
        '<div class="explain"><p>Adversarially robust knowledge distillation, reproduced under '
        "one trainer and one evaluator. A <strong>table</strong> holds the runs that share a "
        "protocol (data, threat model, training budget, evaluation, checkpoint rule), a teacher "
        "and a student: only numbers in one table are comparable. A <strong>row</strong> is one "
        "method with one recipe, averaged over seeds; each run has its own page with its "
        'config, curves and provenance. A <span class="tag retired">retired</span> protocol '
        "keeps its table for the record but should not be used for new comparisons.</p></div>",
        "<h2>Tables</h2>",
        _menus(data.tables),
        '<div class="scroll"><table id="tables" class="index"><thead><tr>'
        f"{head}</tr></thead><tbody>\n{rows}\n</tbody></table></div>",
        f'<p class="lead">{len(data.tables)} tables, {len(data.runs)} runs, '
        f"{len(data.methods())} methods ({link('methods.html', 'all methods')}); every table "
        f"as CSV and JSON on the {link('downloads.html', 'downloads')} page.</p>",
    ]
    return page("Leaderboard", "\n".join(body), depth=0, active="index.html")


def render_downloads(data: SiteData) -> str:
    items = []
    for t in data.tables:
        flat = t.name.replace("/", "--")
        items.append(
            f"<tr><td>{link(table_page(t), t.key.protocol.label)}</td>"
            f"<td>{esc(teacher_name(t))} → {esc(t.student)}</td>"
            f"<td>{link(f'data/tables/{flat}.csv', 'CSV')} · "
            f"{link(f'data/tables/{flat}.json', 'JSON')}</td></tr>"
        )
    body = (
        "<h1>Downloads</h1>"
        '<p class="lead">Each table as CSV (one line per row: means and stds in percent, the '
        "run ids) and JSON (the same, with the table's key); "
        + link("data/all.json", "all.json")
        + " holds every table and every record as the leaderboard stores it.</p>"
        '<div class="scroll"><table><thead><tr><th>Protocol</th><th>Teacher → student</th>'
        f"<th>Files</th></tr></thead><tbody>{''.join(items)}</tbody></table></div>"
    )
    return page("Downloads", body, depth=0, active="downloads.html")
