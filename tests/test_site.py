"""ardbench site without a browser: byte-stable builds, escaping, what a run page shows, the
output folder's manifest, the markdown subset. The browser checks are in test_site_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from site_helpers import COMMITTED, EVIL, HOSTILE_RUN, site_inputs

from ardbench.cli import main
from ardbench.results.leaderboard import collect_records
from ardbench.results.records import load_record
from ardbench.results.tables import build_tables
from ardbench.site import build_site
from ardbench.site.build import MANIFEST
from ardbench.site.data import table_page
from ardbench.site.markdown import markdown
from ardbench.site.titles import retired


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return site_inputs(tmp_path_factory.mktemp("site-inputs"))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_committed_leaderboard_site_is_byte_stable_and_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["site", "--runs", str(COMMITTED), "--out", str(a)]) == 0
    build_site(COMMITTED, b)
    files = _files(a)
    assert files == _files(b)  # two builds, byte-identical
    tables = build_tables(collect_records(COMMITTED))
    for t in tables:
        assert table_page(t) in files
        flat = t.name.replace("/", "--")
        assert f"data/tables/{flat}.csv" in files and f"data/tables/{flat}.json" in files
    records = collect_records(COMMITTED)
    for r in records:
        assert f"runs/{r['run_id']}.html" in files
    # no machine's paths and no build time in the pages
    for rel, blob in files.items():
        if rel.endswith(".html"):
            text = blob.decode()
            assert "/work/" not in text and "/root/" not in text and "/home/" not in text, rel
    manifest = files[MANIFEST].decode().split()
    assert sorted(manifest) == sorted(files)
    everything = json.loads(files["data/all.json"])
    assert len(everything["records"]) == len(records) and len(everything["tables"]) == len(tables)
    # retired protocols are marked on the index (the committed leaderboard has one)
    index = files["index.html"].decode()
    n_retired = sum(1 for t in tables if retired(t))
    assert n_retired >= 1 and index.count('class="tag retired"') == 1 + n_retired  # + legend


def test_site_escapes_record_text(inputs, tmp_path):
    build_site(inputs, tmp_path / "site")
    pages = {p: p.read_text() for p in (tmp_path / "site").rglob("*.html")}
    run = pages[tmp_path / "site" / "runs" / f"{HOSTILE_RUN}.html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run
    for path, text in pages.items():
        assert "<script>alert" not in text and "<img src=nowhere" not in text, path
        assert "javascript:" not in re.sub(
            r"&[a-z]+;", "", "".join(re.findall(r'href="[^"]*"', text))
        )
    assert EVIL not in "".join(pages.values())


def test_run_page_shows_the_record_curves_and_verification(inputs, tmp_path):
    build_site(inputs, tmp_path / "site")
    tiny = sorted((inputs / "tiny").iterdir())
    for run_dir, state in zip(tiny, ("verified", "unverified"), strict=True):
        record = load_record(run_dir / "record.json")
        text = (tmp_path / "site" / "runs" / f"{record['run_id']}.html").read_text()
        for col, acc in record["eval"]["accuracy"].items():
            assert f'data-col="{col}">{100 * acc:.2f}</td>' in text
        assert f'id="verification">{state}</span>' in text
        assert text.count("<polyline") == 3 + 2  # loss, kl_nat, ce_nat; probe clean, pgd10
        assert f"{record['hardware']['peak_memory_mb']:.0f} MB" in text
        assert "train.epochs" in text and "(registered: 200)" in text  # changes vs kd-cifar10
    table = next((tmp_path / "site" / "tables").glob("kd-cifar10*.html")).read_text()
    assert "1 of 2 runs verified" in table  # the row: one run verified, one not
    committed = (tmp_path / "site" / "runs").glob("kd-small_cnn-s0-20261122-042211-dce4.html")
    assert "No epoch log on file" in next(committed).read_text()


def test_rebuild_removes_stale_pages_and_refuses_a_foreign_folder(inputs, tmp_path):
    out = tmp_path / "site"
    build_site(inputs, out)
    stale = out / "runs" / "gone.html"
    stale.write_text("old")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "runs/gone.html\n")
    (out / "mine.txt").write_text("not the site's")
    report = build_site(inputs, out)
    assert report.removed == 1 and not stale.exists() and (out / "mine.txt").exists()
    listed = (out / MANIFEST).read_text().split()
    assert report.written == 1 and report.unchanged == len(listed) - 1  # the manifest changed
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert main(["site", "--runs", str(inputs), "--out", str(foreign)]) == 2
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_markdown_subset_is_safe():
    html = markdown(
        "# Title <b>x</b>\n\nSee [code](https://github.com/a/b) and [file](README.md) "
        "and [bad](javascript:alert(1)); `a<b` **bold** \\| &amp; &lt;\n\n"
        "| a | b |\n|---|---:|\n| `x \\| y` | 1 |\n\n- one\n- two\n"
    )
    assert "<h2>Title &lt;b&gt;x&lt;/b&gt;</h2>" in html
    assert '<a href="https://github.com/a/b">code</a>' in html
    assert (
        "file" in html
        and 'href="README.md"' not in html
        and "javascript" not in html.split("bad")[0]
    )
    assert 'href="javascript' not in html
    assert "<code>a&lt;b</code>" in html and "<strong>bold</strong>" in html
    assert "| &amp; &lt;" in html
    assert "<td><code>x | y</code></td>" in html and '<td class="num">1</td>' in html
    assert "<ul><li>one</li><li>two</li></ul>" in html


def test_verification_and_logs_from_other_folders(tmp_path):
    """A failed verification beside a committed record marks its run and its row; --logs
    finds a run directory's log.jsonl for a record that has none beside it."""
    runs = tmp_path / "records"
    table = next(p for p in sorted(COMMITTED.iterdir()) if p.name == "cifar10-exact-linf2")
    shutil.copytree(table, runs / table.name)
    rid = "kd-small_cnn-s0-20261122-042211-dce4"
    record = next(runs.rglob(f"{rid}.json"))
    (record.parent / f"{rid}.verify.json").write_text(
        '{"state": "failed", "note": "AA 3 points lower"}'
    )
    logs = tmp_path / "logs" / rid
    logs.mkdir(parents=True)
    rows = [{"epoch": e, "losses": {"kl": 1.0 / e}, "probe": {"clean": 0.1 * e}} for e in (1, 2)]
    (logs / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epo')
    out = tmp_path / "site"
    build_site(runs, out, (tmp_path / "logs",))
    page = (out / "runs" / f"{rid}.html").read_text()
    assert 'id="verification">failed</span> AA 3 points lower' in page
    assert (
        page.count("<polyline") == 2 and '<td class="num">10.00</td>' in page
    )  # torn line dropped
    board = next((out / "tables").glob("*.html")).read_text()
    assert '<span class="tag failed">failed</span>' in board and "1 of 1 runs failed" in board
