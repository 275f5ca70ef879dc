"""HTML building blocks: escaping, the page frame, tables, numbers and record text for display.

Every string that comes from a record, a log or a README reaches the page through :func:`esc`
(text and attribute values alike); only markup written here is HTML. Nothing here reads the
clock or the machine: the same inputs give the same bytes.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from ..results.grouping import dataset_label, display_spec

__all__ = [
    "DASH",
    "Cell",
    "esc",
    "fmt_pct",
    "html_table",
    "link",
    "page",
    "scrub",
]

DASH = "—"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(value: Any) -> str:
    """Record text as HTML text or an attribute value (quotes escaped too; control characters
    that HTML forbids become U+FFFD)."""
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def fmt_pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage with fixed decimals, or a dash."""
    if fraction is None or not math.isfinite(fraction):
        return DASH
    return f"{100 * fraction:.{digits}f}"


def link(href: str, text: str, *, title: str = "") -> str:
    """``href`` is built here (relative site paths or checked URLs); ``text`` is raw."""
    t = f' title="{esc(title)}"' if title else ""
    return f'<a href="{esc(href)}"{t}>{esc(text)}</a>'


_PATHLIKE = re.compile(r"^(?:/|~|\.\.?/|[A-Za-z]:[\\/])")


def scrub(key: str, value: Any) -> Any:
    """A config value for display without the directories of the machine that ran it: model
    and dataset specs shortened as the tables show them, other file paths to their name."""
    if not isinstance(value, str):
        return value
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "dataset":
        return dataset_label(value)
    if leaf in ("teacher", "student") or leaf.endswith("_teacher"):
        return display_spec(value)
    if _PATHLIKE.match(value) or ":/" in value and not value.startswith(("http://", "https://")):
        return "…/" + PurePosixPath(value.replace("\\", "/")).name
    return value


class Cell:
    """A table cell: display ``html`` (markup already), an optional sort value, a class."""

    __slots__ = ("cls", "html", "sort", "title")

    def __init__(
        self, html_: str, sort: float | str | None = None, cls: str = "", title: str = ""
    ) -> None:
        self.html, self.sort, self.cls, self.title = html_, sort, cls, title

    def render(self, tag: str = "td") -> str:
        attrs = ""
        if self.sort is not None:
            value = f"{self.sort:.6f}" if isinstance(self.sort, float) else self.sort
            attrs += f' data-v="{esc(value)}"'
        if self.cls:
            attrs += f' class="{self.cls}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        return f"<{tag}{attrs}>{self.html}</{tag}>"


def html_table(
    head: Sequence[tuple[str, str, str]],
    rows: Iterable[Sequence[Cell]],
    *,
    cls: str = "",
    row_attrs: Sequence[str] | None = None,
    table_id: str = "",
) -> str:
    """``head``: (title, tooltip, "num" | "text" | "") per column; a column with a kind is
    sortable by clicking its header (assets/site.js). ``row_attrs``: extra attributes per row
    (markup already)."""
    ths = []
    for title, tip, kind in head:
        attrs = f' data-kind="{kind}" tabindex="0"' if kind else ""
        attrs += ' class="num"' if kind == "num" else ""
        attrs += f' title="{esc(tip)}"' if tip else ""
        ths.append(f"<th{attrs}>{esc(title)}</th>")
    body = []
    for i, row in enumerate(rows):
        extra = f" {row_attrs[i]}" if row_attrs else ""
        body.append(f"<tr{extra}>" + "".join(c.render() for c in row) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    sortable = " sortable" if any(k for _, _, k in head) else ""
    return (
        f'<div class="scroll"><table{ident} class="{cls}{sortable}">'
        f"<thead><tr>{''.join(ths)}</tr></thead><tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></div>"
    )


def definition_list(items: Iterable[tuple[str, str]]) -> str:
    """(term, markup) pairs as a two-column table."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


_NAV = (("index.html", "Leaderboard"), ("methods.html", "Methods"), ("downloads.html", "Downloads"))


def page(title: str, body: str, *, depth: int, active: str = "") -> str:
    """A whole HTML document. ``depth``: how many folders below the site's root it lives
    (links to the root's pages and assets are relative, so ``file://`` works)."""
    root = "../" * depth
    nav = " ".join(
        f'<a href="{root}{href}"' + (' class="active"' if href == active else "") + f">{text}</a>"
        for href, text in _NAV
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{esc(title)} · ardbench</title>\n"
        f'<link rel="stylesheet" href="{root}assets/site.css">\n'
        f'<script src="{root}assets/site.js" defer></script>\n'
        "</head>\n<body>\n"
        f'<header><a class="brand" href="{root}index.html">ardbench</a><nav>{nav}</nav></header>\n'
        f"<main>\n{body}\n</main>\n"
        "<footer>Generated by <code>ardbench site</code> from the run records; the markdown "
        "tables in <code>leaderboard/</code> are the source of truth.</footer>\n"
        "</body>\n</html>\n"
    )
