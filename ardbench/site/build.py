"""Build the site: every page and download in memory, then written into the output folder.

Layout::

    index.html  methods.html  downloads.html
    tables/<protocol>--<teacher>__<student>.html
    runs/<run_id>.html
    methods/<method>.html
    data/tables/<table>.csv|json  data/all.json
    assets/site.css  assets/site.js
    .nojekyll        (GitHub Pages serves the folder as it is)
    MANIFEST.txt     (the files written, one per line: the next build removes those it no
                      longer writes, and never touches anything else)

Byte-stable: nothing depends on the clock, the machine or the order of files on disk, so two
builds of the same records are identical (checked by the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ArdbenchError
from ..io import atomic_write_bytes
from .assets import CSS, JS
from .data import SiteData, load_site_data, method_page, run_page, table_page
from .downloads import all_json, table_csv, table_json
from .index_page import render_downloads, render_index
from .method_page import render_method_page, render_methods_index
from .run_page import render_run_page
from .table_page import render_table_page

__all__ = ["MANIFEST", "SiteReport", "build_site", "render_site"]

MANIFEST = "MANIFEST.txt"


class SiteError(ArdbenchError):
    """An output folder the site cannot be written into."""


@dataclass(frozen=True)
class SiteReport:
    written: int
    unchanged: int
    removed: int
    pages: int
    tables: int
    runs: int


def render_site(data: SiteData) -> dict[str, str]:
    """{path relative to the site root: text} for every file of the site."""
    files: dict[str, str] = {
        "index.html": render_index(data),
        "methods.html": render_methods_index(data),
        "downloads.html": render_downloads(data),
        "assets/site.css": CSS,
        "assets/site.js": JS,
        ".nojekyll": "",
        "data/all.json": all_json(data),
    }
    for t in data.tables:
        files[table_page(t)] = render_table_page(t, data)
        flat = t.name.replace("/", "--")
        files[f"data/tables/{flat}.csv"] = table_csv(t, data)
        files[f"data/tables/{flat}.json"] = table_json(t, data)
    for rid in sorted(data.runs):
        files[run_page(rid)] = render_run_page(data.runs[rid])
    for name in data.methods():
        files[method_page(name)] = render_method_page(name, data)
    files[MANIFEST] = "".join(f"{p}\n" for p in sorted(files) if p != MANIFEST) + f"{MANIFEST}\n"
    return dict(sorted(files.items()))


def _previous(out: Path) -> list[str]:
    """The files the last build wrote; an error for a folder that is not a site's."""
    manifest = out / MANIFEST
    if manifest.is_file():
        return [line for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    if out.is_dir() and any(out.iterdir()):
        raise SiteError(
            f"{out} is not empty and holds no {MANIFEST} (not a folder ardbench site wrote)",
            hint="pass --out with a new or empty folder",
        )
    return []


def _inside(out: Path, rel: str) -> Path:
    path = out / rel
    if out.resolve() not in path.resolve().parents:
        raise SiteError(f"refusing to touch {path}: outside {out}")
    return path


def build_site(
    runs_dir: str | Path, out_dir: str | Path, log_dirs: tuple[str | Path, ...] = ()
) -> SiteReport:
    """Render the site of the records under ``runs_dir`` into ``out_dir`` (files whose bytes
    are unchanged are not rewritten; files the previous build wrote and this one does not are
    removed)."""
    out = Path(out_dir)
    previous = _previous(out)
    data = load_site_data(runs_dir, log_dirs)
    files = render_site(data)
    written = unchanged = removed = 0
    for rel, text in files.items():
        path = _inside(out, rel)
        blob = text.encode("utf-8")
        if path.is_file() and path.read_bytes() == blob:
            unchanged += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, blob)
        written += 1
    for rel in previous:
        if rel in files:
            continue
        path = _inside(out, rel)
        if path.is_file():
            path.unlink()
            removed += 1
    pages = sum(1 for p in files if p.endswith(".html"))
    return SiteReport(written, unchanged, removed, pages, len(data.tables), len(data.runs))
