"""A small, safe markdown-to-HTML converter for the text the site shows: a table's header as
:mod:`ardbench.results.render` writes it, and a method's ``baselines/<method>/README.md``.

The subset: ATX headings (shifted down by ``shift`` levels), paragraphs, ``-``/``*``/``1.``
list items, pipe tables, fenced code, block quotes; inline code spans, ``**bold**``,
backslash escapes, the entities ``render`` writes, ``[text](url)`` and ``<url>`` links.
Every piece of text is escaped first; raw HTML in the input stays text. Only ``http(s)``
links become links: a relative link (to a file of the repository) is shown as its text, so
that the site has no link that points nowhere.
"""

from __future__ import annotations

import re

from .html import esc

__all__ = ["inline", "markdown"]

_INLINE = re.compile(
    r"(?P<code>(?P<fence>`+)(?P<body>.+?)(?<!`)(?P=fence)(?!`))"
    r"|\\(?P<escaped>[!-/:-@\[-`{-~])"
    r"|\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]+)\)"
    r"|<(?P<auto>https?://[^>\s]+)>"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|&(?P<entity>amp|lt|gt|quot|#\d{1,6});"
)


def _url_ok(url: str) -> bool:
    return url.startswith(("https://", "http://"))


def inline(text: str) -> str:
    """One line (or paragraph) of markdown text as HTML."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[pos : m.start()]))
        pos = m.end()
        if m.group("code"):
            body = m.group("body")
            if body.startswith(" ") and body.endswith(" ") and body.strip():
                body = body[1:-1]
            out.append(f"<code>{esc(body)}</code>")
        elif m.group("escaped"):
            out.append(esc(m.group("escaped")))
        elif m.group("url") is not None:
            label = inline(m.group("text"))
            url = m.group("url")
            out.append(f'<a href="{esc(url)}">{label}</a>' if _url_ok(url) else label)
        elif m.group("auto"):
            url = m.group("auto")
            out.append(f'<a href="{esc(url)}">{esc(url)}</a>')
        elif m.group("bold"):
            out.append(f"<strong>{inline(m.group('bold'))}</strong>")
        else:
            out.append(f"&{m.group('entity')};")
    out.append(esc(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """A pipe-table row's cells; ``\\|`` is a literal bar (also inside code spans, as GitHub
    reads tables)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    parts = re.split(r"(?<!\\)\|", body)
    return [p.strip().replace("\\|", "|") for p in parts]


_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _table(lines: list[str]) -> str:
    head = _cells(lines[0])
    aligns = ["num" if c.strip().endswith(":") else "" for c in _cells(lines[1])]

    def row(cells: list[str], tag: str) -> str:
        tds = []
        for i, c in enumerate(cells):
            cls = ' class="num"' if i < len(aligns) and aligns[i] else ""
            tds.append(f"<{tag}{cls}>{inline(c)}</{tag}>")
        return "<tr>" + "".join(tds) + "</tr>"

    body = "".join(row(_cells(line), "td") for line in lines[2:])
    return (
        f'<div class="scroll"><table><thead>{row(head, "th")}</thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Split into (kind, lines) blocks: code, heading, table, list, quote, para."""
    blocks: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            blocks.append(("code", lines[i + 1 : j]))
            i = j + 1
        elif re.match(r"^#{1,6}\s", line):
            blocks.append(("heading", [line]))
            i += 1
        elif (
            line.lstrip().startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1])
        ):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            blocks.append(("table", lines[i:j]))
            i = j
        else:
            kind = "list" if _ITEM.match(line) else "quote" if line.startswith(">") else "para"
            j = i + 1
            while j < len(lines) and lines[j].strip() and not _starts_block(lines[j], kind):
                j += 1
            blocks.append((kind, lines[i:j]))
            i = j
    return blocks


def _starts_block(line: str, kind: str) -> bool:
    if re.match(r"^#{1,6}\s", line) or line.lstrip().startswith(("```", "|")):
        return True
    if kind != "quote" and line.startswith(">"):
        return True
    return kind != "list" and bool(_ITEM.match(line))


def _list(lines: list[str]) -> str:
    items: list[str] = []
    for line in lines:
        if _ITEM.match(line):
            items.append(_ITEM.sub("", line, count=1))
        elif items:
            items[-1] += " " + line.strip()
    tag = "ol" if re.match(r"^\s*\d+\.", lines[0]) else "ul"
    return f"<{tag}>" + "".join(f"<li>{inline(t)}</li>" for t in items) + f"</{tag}>"


def markdown(text: str, *, shift: int = 1) -> str:
    """``text`` as HTML; headings move down ``shift`` levels (a README's ``#`` under the page's
    own ``<h1>``)."""
    out = []
    for kind, lines in _blocks(text.splitlines()):
        if kind == "code":
            out.append(f"<pre><code>{esc(chr(10).join(lines))}</code></pre>")
        elif kind == "heading":
            hashes, _, title = lines[0].partition(" ")
            level = min(len(hashes) + shift, 6)
            out.append(f"<h{level}>{inline(title.strip())}</h{level}>")
        elif kind == "table":
            out.append(_table(lines))
        elif kind == "list":
            out.append(_list(lines))
        elif kind == "quote":
            body = " ".join(line.lstrip(">").strip() for line in lines)
            out.append(f"<blockquote><p>{inline(body)}</p></blockquote>")
        else:
            out.append(f"<p>{inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)
