"""A method's page: every row of it across the tables, its flags (the config's fields with
their faithful defaults), and its paper, official code, quirks and deviations as its
``baselines/<method>/README.md`` states them (the class docstring where there is no README),
plus the methods' overview page."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

from ..results.schema import COLUMNS
from ..results.tables import COLUMN_TITLES
from .data import SiteData, method_page, row_verification, table_page
from .html import Cell, esc, html_table, link, page
from .markdown import markdown
from .table_page import markdown_parts, stat_cell
from .titles import table_title

__all__ = ["render_method_page", "render_methods_index"]

BASELINES = Path(__file__).resolve().parents[2] / "baselines"


def _method_class(name: str) -> type | None:
    from ..methods import METHODS
    from ..registry import UnknownNameError

    try:
        return METHODS.get(name)
    except UnknownNameError:  # a record of a method this installation does not have
        return None


def _readme(name: str) -> str | None:
    for folder in (BASELINES / name, BASELINES / "contrib" / name):
        path = folder / "README.md"
        if path.is_file():
            return path.read_text(encoding="utf-8", errors="replace")
    return None


def _flags(cls: type) -> str:
    config = getattr(cls, "Config", None)
    if config is None or not dataclasses.is_dataclass(config):
        return ""
    rows = []
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        shown = default if isinstance(default, str) else json.dumps(default, default=str)
        rows.append(
            f"<tr><th><code>{esc(f.name)}</code></th><td><code>{esc(shown)}</code></td></tr>"
        )
    if not rows:
        return "<h2>Flags</h2><p>No settings.</p>"
    return (
        '<h2>Flags</h2><p class="lead">The method\'s settings and their defaults (the '
        "official code's behaviour, quirks included); set one with "
        "<code>--set method_config.NAME=VALUE</code>.</p>"
        f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'
    )


def _rows(name: str, data: SiteData) -> str:
    head: list[tuple[str, str, str]] = [
        ("Table", "protocol · teacher → student", "text"),
        ("#", "the row's rank in its table", "num"),
        ("Recipe", "", "text"),
        *((COLUMN_TITLES[c], f"{COLUMN_TITLES[c]} accuracy, %", "num") for c in COLUMNS),
        ("Runs", "", "num"),
        ("Verified", "", "text"),
    ]
    cells = []
    for t in data.tables:
        _, ranks, _ = markdown_parts(t)
        for row, rank in zip(t.rows, ranks, strict=True):
            if row.method != name:
                continue
            v = row_verification(row, data.runs)
            label = table_title(t) + ("" if row.checkpoint == "last" else f" ({row.checkpoint})")
            cells.append(
                [
                    Cell(link("../" + table_page(t), label), sort=label),
                    Cell(esc(rank), sort=float(t.rows.index(row) + 1), cls="num"),
                    Cell(esc(row.recipe_cell), sort=row.recipe_cell),
                    *(stat_cell(row.stats[c], row.runs) for c in COLUMNS),
                    Cell(str(row.runs), sort=float(row.runs), cls="num"),
                    Cell(
                        f'<span class="tag {v.state}">{v.state}</span>', sort=v.state, title=v.note
                    ),
                ]
            )
    if not cells:
        return "<p>No rows in any table.</p>"
    return html_table(head, cells, cls="board")


def render_method_page(name: str, data: SiteData) -> str:
    cls = _method_class(name)
    paper = getattr(cls, "paper", "") if cls else ""
    body = [f"<h1>{esc(name)}</h1>"]
    if paper:
        body.append(f'<p class="lead">{esc(paper)}</p>')
    if cls is None:
        body.append("<p>This method is not installed where the site was built: its rows only.</p>")
    elif getattr(cls, "unofficial", False):
        body.append(
            '<p><span class="tag">unofficial re-implementation</span> (no official code)</p>'
        )
    body += ["<h2>Rows across tables</h2>", _rows(name, data)]
    if cls is not None:
        body.append(_flags(cls))
    readme = _readme(name)
    if readme is not None:
        body += [
            f"<h2>Paper, official code, quirks (baselines/{esc(name)}/README.md)</h2>",
            f'<div class="md">{markdown(readme, shift=2)}</div>',
        ]
    elif cls is not None and cls.__doc__:
        body += [
            "<h2>Description (docstring)</h2>",
            f"<pre>{esc(inspect.cleandoc(cls.__doc__))}</pre>",
        ]
    return page(f"Method {name}", "\n".join(body), depth=1, active="")


def render_methods_index(data: SiteData) -> str:
    items = []
    for name in data.methods():
        cls = _method_class(name)
        paper = getattr(cls, "paper", "") if cls else ""
        n = sum(1 for t in data.tables for r in t.rows if r.method == name)
        items.append(
            f'<tr><td class="key">{link(method_page(name), name)}</td><td>{esc(paper)}</td>'
            f'<td class="num">{n}</td></tr>'
        )
    return page(
        "Methods",
        '<h1>Methods</h1><p class="lead">Every method with a row in a table: its paper, '
        "official code, quirk flags and all its rows.</p>"
        '<div class="scroll"><table><thead><tr><th>Method</th><th>Paper</th>'
        f'<th class="num">Rows</th></tr></thead><tbody>{"".join(items)}</tbody></table></div>',
        depth=0,
        active="methods.html",
    )
