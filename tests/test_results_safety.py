"""Honest records and tables (issue 11, item 5): ids validated, record text escaped in the
markdown, table file names from canonical parts only, the method's source hashed, and
untracked method files make a record dirty."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ardbench.cli import main
from ardbench.io import file_sha256
from ardbench.results import provenance
from ardbench.results.grouping import record_relpath, slug, table_key, table_relpath
from ardbench.results.leaderboard import add_records
from ardbench.results.records import (
    RecordError,
    example_record,
    load_record,
    validate_record,
    write_record,
)
from ardbench.results.render import md_code, md_text, render_leaderboard

HOSTILE_SPEC = "../../x|y\n.pt2"


def hostile_record(**kw) -> dict:
    """A valid record whose free-text fields hold markdown, HTML and line breaks."""
    r = example_record(
        run_id=kw.pop("run_id", "kd-s0"),
        teacher={"spec": HOSTILE_SPEC, "resolved": HOSTILE_SPEC, "sha256": "1" * 64},
        recipe="evil|recipe\n| 9 | fake | row |",
        paper={"source": "<script>alert(1)</script> [x](http://e) `c`", "aa": 50.0},
        code_version={"git_sha": None, "dirty": None, "version": "1.0|x\r\n<b>"},
        **kw,
    )
    r["track"]["dataset"] = "npz:/tmp/a|b\n.npz"
    r["track"]["official"] = False
    r["eval"]["settings"] = {"pgd20": {"attack": "pgd|x\ny", "steps": 20}}
    r["eval"]["compliance"] = {"fp32|x\n| 1 | 2 |": {"passed": False}}
    validate_record(r)
    return r


def _cells(line: str) -> list[str]:
    """The cells of a GFM table row: split on pipes that are not escaped."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_md_text_and_code_escape_what_markdown_would_read():
    assert md_text("a|b\nc\r\nd\u2028e") == "a\\|b c d e"
    assert md_text("<b>&</b>") == "&lt;b&gt;&amp;&lt;/b&gt;"
    assert md_text("[x](http://e) `c` \\") == "\\[x\\](http://e) \\`c\\` \\\\"
    assert md_text("pgd_at-small_cnn+npz.v2") == "pgd_at-small_cnn+npz.v2"  # ids stay as they are
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x`") == "`` `x` ``"
    assert md_code("a|b\nc") == "`a|b c`"
    assert md_code("a|b", cell=True) == "`a\\|b`"


def test_hostile_record_text_adds_no_row_column_or_html():
    files = render_leaderboard([hostile_record()])
    (table,) = [p for p in files if p != "README.md"]
    text = files[table]
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| # |"))
    rows = [line for line in lines[head:] if line.startswith("|")]
    assert len(rows) == 3  # header, delimiter, one run
    assert all(len(_cells(r)) == 14 for r in rows)  # the 13 columns and Verified
    assert "<script>" not in text and "<b>" not in text
    assert "\\[x\\](http://e)" in text and not re.search(r"(?<!\\)\[x", text)  # no link
    assert not any(line.startswith("| 9 |") for line in lines)
    index_rows = [line for line in files["README.md"].splitlines() if line.startswith("|")]
    assert len(index_rows) == 3 and all(len(_cells(r)) == 8 for r in index_rows)
    # each header fact stays on its own line
    assert sum(line.startswith("**Teacher.**") for line in lines) == 1
    assert next(line for line in lines if line.startswith("- PGD-20:")).endswith("steps=20")


def test_table_names_of_a_hostile_teacher_spec_stay_inside_the_output(tmp_path):
    r = hostile_record()
    rel = table_relpath(table_key(r), [r])
    assert re.fullmatch(r"[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+\.md", rel), rel
    assert ".." not in Path(rel).parts and "x-y-11111111__resnet18" in rel
    assert re.fullmatch(r"[A-Za-z0-9_.+/-]+\.json", record_relpath(r).as_posix())

    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    write_record(tmp_path / "run", r)
    ((dest, status),) = add_records([tmp_path / "run"], runs)
    assert status == "added" and runs.resolve() in dest.resolve().parents
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out), "--check"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith(("lb/", "run/")) for p in written), written
    assert all("\n" not in p and "|" not in p for p in written)


def test_slugs_are_bounded_and_never_dot_names():
    assert slug("../..") == "x"
    assert slug(".hidden") == "hidden"
    assert len(slug("a" * 1000)) == 80
    assert slug("npz-cifar10_train.npz+test.npz") == "npz-cifar10_train.npz+test.npz"


@pytest.mark.parametrize(
    "field, value",
    [
        ("run_id", "a+b"),
        ("run_id", "../x"),
        ("run_id", ".hidden"),
        ("run_id", "a b"),
        ("run_id", "x\n"),
        ("run_id", "a" * 201),
        ("student.arch", "resnet|18"),
        ("student.arch", "../resnet"),
        ("teacher.arch", "a/b"),
    ],
)
def test_ids_that_become_file_names_are_validated(field, value):
    r = example_record()
    head, _, last = field.rpartition(".")
    (r[head] if head else r)[last] = value
    with pytest.raises(RecordError, match="id") as info:
        validate_record(r)
    assert info.value.field == field


def test_committed_records_are_valid_and_their_ids_unchanged():
    runs = Path(__file__).resolve().parents[1] / "leaderboard" / "runs"
    # beside the records: later evaluations and verification results (not records)
    sidecars = (".eval.json", ".verify.json")
    paths = sorted(p for p in runs.rglob("*.json") if not p.name.endswith(sidecars))
    assert paths
    for path in paths:
        record = load_record(path)
        assert path.name == f"{record['run_id']}.json"


# ------------------------------------------------------------------------- provenance


def test_builtin_method_source_is_its_module_file():
    from ardbench.methods import get_method

    cls = get_method("pgd_at")
    root, files = provenance.method_source_files(cls)
    assert root == files[0] == Path(sys.modules[cls.__module__].__file__).resolve()
    assert provenance.method_source_sha256(cls) == file_sha256(root)


def _contrib_method(folder: Path, monkeypatch) -> type:
    """A class that looks as if ardbench.methods.contrib imported ``folder/method.py``."""
    from ardbench.methods.contrib import module_name

    path = (folder / "method.py").resolve()
    name = module_name(path)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    monkeypatch.setitem(sys.modules, name, module)
    return type("Submitted", (), {"__module__": name})


def test_contrib_method_source_hashes_its_whole_folder(tmp_path, monkeypatch):
    folder = tmp_path / "contrib" / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "method.py").write_text("x = 1\n")
    (folder / "standard.yaml").write_text("method: mine\n")
    (folder / "sub" / "notes.md").write_text("notes\n")
    cls = _contrib_method(folder, monkeypatch)
    digest = provenance.method_source_sha256(cls)
    expected = hashlib.sha256(
        "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}\n"
            for p in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
            if p.is_file()
        ).encode()
    ).hexdigest()
    assert digest == expected
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "method.cpython-311.pyc").write_bytes(b"cache")
    assert provenance.method_source_sha256(cls) == digest  # importing it changes nothing
    (folder / "standard.yaml").write_text("method: mine\nepochs: 2\n")
    assert provenance.method_source_sha256(cls) != digest  # any file of the folder counts


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_untracked_method_files_make_the_checkout_dirty(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    builtin = repo / "ardbench" / "methods" / "kd.py"
    builtin.parent.mkdir(parents=True)
    builtin.write_text("x = 1\n")
    (repo / ".gitignore").write_text("*.pt\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "CHECKOUT", repo)

    assert provenance.code_version([builtin])["dirty"] is False
    contrib = repo / "baselines" / "contrib" / "mine"
    contrib.mkdir(parents=True)
    (contrib / "method.py").write_text("y = 2\n")
    files = [contrib / "method.py"]
    assert provenance.code_version()["dirty"] is False  # untracked files elsewhere: not counted
    assert provenance.code_version(files)["dirty"] is True  # the method's own: counted
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "add mine")
    assert provenance.code_version(files)["dirty"] is False
    (contrib / "weights.pt").write_bytes(b"w")  # ignored by git, still not in the commit
    assert provenance.code_version([*files, contrib / "weights.pt"])["dirty"] is True
    outside = tmp_path / "elsewhere" / "method.py"
    outside.parent.mkdir()
    outside.write_text("z = 3\n")
    assert provenance.code_version([outside])["dirty"] is False  # its hash identifies it
    builtin.write_text("x = 2\n")
    assert provenance.code_version()["dirty"] is True  # a modified tracked file, as before


def test_records_without_a_source_hash_still_load_and_bad_ones_are_named():
    r = example_record()
    assert "source_sha256" not in r["method"]
    validate_record(r)
    r["method"]["source_sha256"] = "f" * 64
    validate_record(r)
    r["method"]["source_sha256"] = "not-a-hash"
    with pytest.raises(RecordError, match="sha256") as info:
        validate_record(r)
    assert info.value.field == "method.source_sha256"


def test_compare_prints_record_text_literally():
    import io

    from rich.console import Console

    from ardbench.results.compare import compare_record, render_comparison

    def run(rid: str, method: str, recipe: str) -> dict:
        return example_record(
            run_id=rid,
            method={"name": method},
            recipe=recipe,
            config={"method": method, "train": {"seed": 0, "epochs": 1}},
        )

    table = [run("kd-s0", "kd", "[red]x[/red]|y")]
    comp = compare_record(run("ard-s0", "ard", "[bold]mine[/bold]"), table)
    buf = io.StringIO()
    render_comparison(comp, Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "[bold]mine[/bold]" in out and "[red]x[/red]|y" in out


@pytest.mark.parametrize(
    "blocks, field",
    [
        ({"settings": ["aa"]}, "settings"),
        ({"warnings": [1]}, "warnings[0]"),
        ({"versions": "0.1"}, "versions"),
        ({"accuracy": {"clean": 0.8, "aa": float("nan")}}, "eval.accuracy.aa"),
    ],
)
def test_a_malformed_later_evaluation_is_a_record_error(tmp_path, capsys, blocks, field):
    from ardbench.results.leaderboard import collect_records

    r = example_record(checkpoint={"path": "m.pt", "sha256": "4" * 64})
    write_record(tmp_path / "runs" / "kd-resnet18-s0-20250101-000000-abcd.json", r)
    ev = {
        "n_examples": 100,
        "eps": 8 / 255,
        "norm": "Linf",
        "accuracy": {"clean": 0.8, "aa": 0.4},
        "model": {"sha256": "4" * 64},
        "data": {"fingerprint": "0" * 64},
        **blocks,
    }
    (tmp_path / "runs" / "kd-resnet18-s0-20250101-000000-abcd.eval.json").write_text(json.dumps(ev))
    with pytest.raises(RecordError) as info:
        collect_records(tmp_path / "runs")
    assert info.value.field == field
    args = ["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path), "--check"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_json_nested_too_deeply_is_a_record_error(tmp_path):
    text = json.dumps(example_record())[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "record.json").write_text(text)
    with pytest.raises(RecordError, match="nested too deeply"):
        load_record(tmp_path)
