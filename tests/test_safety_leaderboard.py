"""``ardbench leaderboard`` removes only what it can prove it wrote and nobody is writing.

- A user's own markdown in ``--out`` survives, even one that quotes the generated-by line
  word for word (only files the manifest ``.ardbench-generated`` lists are ever stale).
- A temporary file another process is writing (a record under ``--runs`` during ``--add``
  or training) survives ``leaderboard`` and a concurrent ``--add``: the writer holds an
  advisory lock on it, and its record is written in the end. The test backdates that file by
  an hour, so only the lock (not its age) keeps it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ardbench.cli import main
from ardbench.results.generated import MANIFEST
from ardbench.results.records import example_record, write_record
from ardbench.results.render import GENERATED_MARK

ROOT = Path(__file__).resolve().parents[1]

# a writer that pauses inside its first fsync (the record's bytes are in its temporary file)
_PAUSED_WRITER = """
import os, sys, time
from pathlib import Path
started, release = Path(sys.argv[1]), Path(sys.argv[2])
real, first = os.fsync, [True]
def paused(fd):
    if first[0]:
        first[0] = False
        started.write_text("writing")
        deadline = time.time() + 120
        while not release.exists() and time.time() < deadline:
            time.sleep(0.02)
    real(fd)
os.fsync = paused
from ardbench.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _record(tmp: Path, run_id: str) -> Path:
    """A record with its (stand-in) weights beside it: ``--add`` checks their hash first."""
    weights = tmp / "src" / f"{run_id}.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(run_id.encode())
    record = example_record(run_id=run_id)
    sha = hashlib.sha256(run_id.encode()).hexdigest()
    record["checkpoint"]["weights"] = {"format": "safetensors", "sha256": sha}
    return write_record(tmp / "src" / f"{run_id}.json", record)


def _lb(runs: Path, out: Path, *extra: str) -> list[str]:
    return ["leaderboard", "--runs", str(runs), "--out", str(out), *extra]


def test_a_users_markdown_quoting_the_generated_line_survives(tmp_path, capsys) -> None:
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    write_record(runs / "a.json", example_record(run_id="a"))
    assert main(_lb(runs, out)) == 0
    table = next(p for p in out.rglob("*.md") if p.name != "README.md")
    mine = [
        out / "NOTES.md",
        out / "mine" / "copy.md",
        table.parent / "draft.md",
    ]
    for path in mine:  # the generated-by line, quoted exactly, and a whole table copied
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# notes\n\n> {GENERATED_MARK[0].upper()}{GENERATED_MARK[1:]}.\n")
    (out / "mine" / "table.md").write_bytes(table.read_bytes())
    capsys.readouterr()
    assert main(_lb(runs, out, "--check")) == 0
    assert main(_lb(runs, out)) == 0
    assert all(p.exists() for p in mine) and (out / "mine" / "table.md").exists()
    assert "removed stale" not in capsys.readouterr().out


def test_a_hand_edited_manifest_cannot_delete_outside_files(tmp_path) -> None:
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    write_record(runs / "a.json", example_record(run_id="a"))
    assert main(_lb(runs, out)) == 0
    outside = tmp_path / "outside.md"
    outside.write_text(f"> {GENERATED_MARK}\n")
    inside_runs = runs / "notes.md"
    inside_runs.write_text(f"> {GENERATED_MARK}\n")
    link = out / "link.md"
    link.symlink_to(outside)
    manifest = out / MANIFEST
    listed = ["../outside.md", str(outside), "runs/notes.md", "link.md", "a/../../outside.md"]
    manifest.write_text(manifest.read_text() + "".join(f"{x}\n" for x in listed))
    assert main(_lb(runs, out)) == 0
    assert outside.exists() and inside_runs.exists() and link.is_symlink()


def _start_paused_writer(tmp_path: Path, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, str(started), str(release), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the writer never started writing"
        time.sleep(0.05)
    return proc, release


@pytest.mark.parametrize("second", ["leaderboard", "add"])
def test_a_temporary_file_being_written_survives(second, tmp_path, capsys) -> None:
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    runs.mkdir(parents=True)
    first_src, second_src = _record(tmp_path, "first"), _record(tmp_path, "second")
    add = ("--no-verify", "--add")  # the stand-in weights are no network to re-evaluate
    proc, release = _start_paused_writer(tmp_path, _lb(runs, out, *add, str(first_src)))
    try:
        (tmp,) = runs.rglob(".*.tmp")
        hour_ago = time.time() - 3600
        os.utime(tmp, (hour_ago, hour_ago))  # only its writer's lock can keep it now
        extra = [*add, str(second_src)] if second == "add" else []
        assert main(_lb(runs, out, *extra)) == 0, capsys.readouterr().err
        assert tmp.exists()
    finally:
        release.write_text("go")
        out_text, err_text = proc.communicate(timeout=120)
    assert proc.returncode == 0, err_text
    added = {p.stem for p in runs.rglob("*.json")}
    assert "first" in added and ("second" in added) == (second == "add")
    assert not list(runs.rglob(".*.tmp"))


def test_an_abandoned_temporary_file_is_still_removed(tmp_path) -> None:
    """A writer that died holds no lock: its old temporary file goes."""
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    runs.mkdir(parents=True)
    dead = runs / ".first.json.abcd1234.tmp"
    dead.write_text("{")
    os.utime(dead, (time.time() - 3600, time.time() - 3600))
    young = runs / ".other.json.abcd1234.tmp"  # just created: its writer may not hold the lock yet
    young.write_text("{")
    assert main(_lb(runs, out)) == 0
    assert not dead.exists() and young.exists()
