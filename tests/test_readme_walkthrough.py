"""The README's "Submitting a method" walkthrough, to the letter, in a temporary copy of the
baselines: the method is the README's own "Writing a method" snippet, put where step 1 says,
checked and run with the commands steps 2 and 3 print (made tiny), and the golden files of
the built-ins still hold with the new method registered (a contrib folder never breaks CI)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from goldens import golden_problems

from ardbench.cli import main
from ardbench.methods import METHODS, contrib
from ardbench.methods.contrib import load_contrib_methods
from ardbench.models import build_arch

REPO = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _fresh_clone(dest: Path) -> Path:
    """What a fresh clone holds: the files git tracks (as they are in the working tree), or
    the baselines and leaderboard where this is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if not names:
        for folder in ("baselines", "leaderboard"):
            shutil.copytree(REPO / folder, dest / folder)
        shutil.copy2(REPO / "README.md", dest / "README.md")
        return dest
    for name in names:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by the test vanish afterwards."""
    METHODS.names()  # run the pending loaders (built-ins) before taking the snapshot
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_loaders", list(METHODS._loaders))
    monkeypatch.setattr(contrib, "_LOADED", {})
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("ardbench_contrib_"):
            del sys.modules[name]


def test_the_readme_submission_walkthrough(tmp_path, monkeypatch, isolated_registry, tiny_npz):
    steps = _section("Submitting a method")
    (snippet,) = _blocks(_section("Writing a method"), "python")
    name = re.search(r'@register_method\("(\w+)"\)', snippet).group(1)

    # 1. write the method where the README says, in a copy of the repository's baselines
    where = re.search(r"`(baselines/contrib/\w+/method\.py)`", steps).group(1)
    assert where == f"baselines/contrib/{name}/method.py"
    clone = _fresh_clone(tmp_path / "clone")
    monkeypatch.chdir(clone)  # the README's commands run from the checkout's root
    method_file = clone / where
    method_file.parent.mkdir()
    method_file.write_text(snippet, encoding="utf-8")
    (method_file.parent / "README.md").write_text(f"# {name}\n\nThe README's example.\n")
    monkeypatch.setenv("ARDBENCH_BASELINES", str(clone / "baselines"))
    METHODS.add_loader(load_contrib_methods)  # ARDBENCH_BASELINES changed: discover again

    # 2. check the contract, with the README's command
    check = f"ardbench check --method {name}"
    assert check in steps
    assert main(shlex.split(check)[1:]) == 0
    assert METHODS.get(name).__module__.startswith("ardbench_contrib_")

    # 3. run the recipe with the README's command, made tiny
    run = next(line for line in _blocks(steps, "bash")[0].splitlines() if " run " in line)
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save(build_arch("small_cnn", 10).state_dict(), teacher)
    tiny = [
        *("--dataset", f"npz:{tiny_npz}", "--teacher", f"small_cnn:{teacher}"),
        *("--epochs", "1", "--set", "train.batch_size=16", "--set", "attack.steps=1"),
        *("--set", "eval.attacks=clean,fgsm", "--quiet"),
    ]
    assert main(shlex.split(run)[1:] + tiny) == 0
    (run_dir,) = (clone / "runs").iterdir()
    assert (run_dir / "record.json").is_file()

    # 4. put the record in the leaderboard with the README's commands: verified, weights
    # published, tables regenerated, and --check (what CI runs) passes
    block = _blocks(steps, "bash")[1].splitlines()
    add, check_cmd = (x.split("#")[0].strip() for x in block if x.strip().startswith("ardbench"))
    add = re.sub(r"runs/<run_id_seed0> runs/<run_id_seed1>", f"runs/{run_dir.name}", add)
    assert main(shlex.split(add)[1:]) == 0
    (filed,) = (clone / "leaderboard" / "runs").rglob(f"{run_dir.name}.verify.json")
    assert '"state": "verified"' in filed.read_text()
    assert (clone / "leaderboard" / "weights" / f"{run_dir.name}.safetensors").is_file()
    assert main(shlex.split(check_cmd)[1:]) == 0
    tables = [p.read_text() for p in (clone / "leaderboard").rglob("*__*.md")]
    (row,) = [x for t in tables for x in t.splitlines() if x.startswith("| ") and f" {name} |" in x]
    assert "| ✓ 1/1 re-evaluated |" in row

    # what CI runs on the golden files still passes, with the submission registered
    assert name in METHODS.names()
    assert golden_problems("method_configs") == []
    assert golden_problems("protocols") == []
