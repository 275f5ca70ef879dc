"""The README's "Submitting a method" walkthrough, to the letter, in a temporary copy of the
baselines: the method is the README's own "Writing a method" snippet, put where step 1 says,
checked and run with the commands steps 2 and 3 print (made tiny), and the golden files of
the built-ins still hold with the new method registered (a contrib folder never breaks CI)."""

from __future__ import annotations

import re
import shlex
import shutil
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
    shutil.copytree(REPO / "baselines", tmp_path / "baselines")
    method_file = tmp_path / where
    method_file.parent.mkdir()
    method_file.write_text(snippet, encoding="utf-8")
    (method_file.parent / "README.md").write_text(f"# {name}\n\nThe README's example.\n")
    monkeypatch.setenv("ARDBENCH_BASELINES", str(tmp_path / "baselines"))
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
        *("--set", "eval.attacks=clean", "--runs", str(tmp_path / "runs"), "--quiet"),
    ]
    assert main(shlex.split(run)[1:] + tiny) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "record.json").is_file()

    # what CI runs on the golden files still passes, with the submission registered
    assert name in METHODS.names()
    assert golden_problems("method_configs") == []
    assert golden_problems("protocols") == []
