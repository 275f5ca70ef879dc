"""The README's "Submitting a method" walkthrough, performed with a throwaway method, both ways:
a folder under ``baselines/contrib/`` and an installed package with an ``ardbench.methods``
entry point. Each ends in a rendered leaderboard table that contains the method."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ardbench.cli import main
from ardbench.methods import METHODS, contrib
from ardbench.methods.contrib import ContribError, load_contrib_methods, module_name
from ardbench.models import build_arch

METHOD_SOURCE = '''\
"""{name}: a throwaway submission used by the test suite (no paper). Deviations from the
official code: none."""

from dataclasses import dataclass

import torch

from ardbench.methods.losses import kl_div
from ardbench.methods import Method, MethodConfig, register_method


@register_method("{name}")
class Throwaway(Method):
    """KL to the teacher at a point that maximises it (test only)."""

    @dataclass(frozen=True)
    class Config(MethodConfig):
        weight: float = 1.0

    def losses(self, student, teacher, batch, ctx):
        with torch.no_grad():
            t = teacher(batch.x)
        x_adv = ctx.attack_fn(batch.x, lambda xa: kl_div(t, student(xa), "batchmean"))
        return {{"kl_adv": self.config.weight * kl_div(t, student(x_adv), "batchmean")}}
'''

RECIPE = """\
# the throwaway's recipe: only what differs from its protocol (a method without a faithful
# protocol of its own follows standard-<dataset>)
method: {name}
method_config: {{weight: 1.0}}
eval: {{attacks: [clean, pgd20]}}
paper: {{source: "none: a test method", clean: null, aa: null}}
"""


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
        if name.startswith(("ardbench_contrib_", "throwaway_pkg")):
            del sys.modules[name]


@pytest.fixture
def tiny_data(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 40)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(build_arch("small_cnn", 10).state_dict(), teacher)
    return npz, teacher


def run_args(method, npz, teacher, runs, seed, recipe=None):
    args = [
        "run",
        "--method",
        method,
        "--dataset",
        f"npz:{npz}",
        "--teacher",
        f"small_cnn:{teacher}",
        "--student",
        "small_cnn",
        "--epochs",
        "1",
        "--seed",
        str(seed),
        "--set",
        "train.batch_size=20",
        "--set",
        "attack.steps=1",
        "--set",
        "eval.attacks=clean,pgd20",
        "--runs",
        str(runs),
        "--quiet",
    ]
    return args + (["--recipe", recipe] if recipe else [])


def publish_and_render(run_dirs, lb):
    """`ardbench leaderboard --add RUN_DIR...`: records into lb/runs, tables into lb."""
    assert (
        main(
            [
                "leaderboard",
                "--runs",
                str(lb / "runs"),
                "--out",
                str(lb),
                "--add",
                *map(str, run_dirs),
            ]
        )
        == 0
    )
    assert main(["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb), "--check"]) == 0
    # the records (and their verification results) under runs/, no checkpoints there...
    assert {p.suffix for p in (lb / "runs").rglob("*") if p.is_file()} == {".json"}
    # ...and the weights beside them, safetensors only, one file per record (README step 4)
    weights = sorted(p.name for p in (lb / "weights").iterdir())
    assert weights == sorted(f"{Path(d).name}.safetensors" for d in run_dirs)
    (table,) = [p for p in lb.rglob("*.md") if p.name != "README.md"]
    return table.read_text()


def test_contrib_folder_walkthrough(tmp_path, monkeypatch, isolated_registry, tiny_data, capsys):
    npz, teacher = tiny_data
    name = "throwaway_contrib"
    baselines = tmp_path / "baselines"
    folder = baselines / "contrib" / name
    folder.mkdir(parents=True)
    # 1. write the method, a recipe and a README
    (folder / "method.py").write_text(METHOD_SOURCE.format(name=name))
    (folder / "smoke.yaml").write_text(RECIPE.format(name=name))
    (folder / "README.md").write_text(f"# {name}\n\nA throwaway method for the test suite.\n")
    monkeypatch.setenv("ARDBENCH_BASELINES", str(baselines))
    # discovery runs before the registry's next lookup (ardbench/methods/__init__.py adds
    # the same loader at import time; added again here because ARDBENCH_BASELINES changed)
    METHODS.add_loader(load_contrib_methods)

    # 2. the contract
    assert main(["check", "--method", name]) == 0
    assert "all" in capsys.readouterr().out
    assert METHODS.get(name).__module__ == module_name(folder / "method.py")
    assert main(["list", "recipes"]) == 0
    assert "smoke" in capsys.readouterr().out

    # 3. run the recipe (two seeds)
    runs = tmp_path / "runs"
    for seed in (0, 1):
        assert main(run_args(name, npz, teacher, runs, seed, recipe="smoke")) == 0
    run_dirs = sorted(runs.iterdir())
    assert len(run_dirs) == 2

    # 4. the leaderboard, with the records published for the pull request
    text = publish_and_render(run_dirs, tmp_path / "leaderboard")
    (row,) = [line for line in text.splitlines() if f"| {name} |" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    head = next(line for line in text.splitlines() if line.startswith("| # |"))
    titles = [c.strip() for c in head.strip("|").split("|")]
    assert cells[1:3] == [name, "smoke"]
    assert cells[titles.index("Seeds")] == "2" and cells[titles.index("Epochs")] == "1"
    assert " ± " in cells[3] and cells[3].split(" ± ")[1] != "—"  # clean: mean ± std
    assert "Not the official dataset" in text


def test_entry_point_walkthrough(tmp_path, monkeypatch, isolated_registry, tiny_data, capsys):
    npz, teacher = tiny_data
    name = "throwaway_ep"
    site = tmp_path / "site"
    pkg = site / "throwaway_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(METHOD_SOURCE.format(name=name))
    dist = site / "throwaway_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ardbench.methods]\n{name} = throwaway_pkg\n")
    monkeypatch.syspath_prepend(str(site))  # as if pip-installed
    monkeypatch.setattr(METHODS, "_entry_points_loaded", False)

    assert main(["check", "--method", name]) == 0
    assert "all" in capsys.readouterr().out
    runs = tmp_path / "runs"
    assert main(run_args(name, npz, teacher, runs, seed=0)) == 0
    text = publish_and_render(sorted(runs.iterdir()), tmp_path / "leaderboard")
    (row,) = [line for line in text.splitlines() if f"| {name} |" in line]
    assert "± —" in row  # one seed: no std


def test_broken_contrib_files_are_named(tmp_path, monkeypatch, isolated_registry):
    baselines = tmp_path / "baselines"
    broken = baselines / "contrib" / "broken" / "method.py"
    broken.parent.mkdir(parents=True)
    broken.write_text("import torch\n\nraise RuntimeError('boom')\n")
    clash = baselines / "contrib" / "clash" / "method.py"
    clash.parent.mkdir(parents=True)
    clash.write_text(METHOD_SOURCE.format(name="kd"))  # a built-in's name
    good = baselines / "contrib" / "fine" / "method.py"
    good.parent.mkdir(parents=True)
    good.write_text(METHOD_SOURCE.format(name="throwaway_fine"))
    with pytest.raises(ContribError) as info:
        load_contrib_methods(baselines)
    message = str(info.value)
    assert f"{broken}, line 3: RuntimeError: boom" in message
    assert str(clash) in message and "already registered" in message
    assert "throwaway_fine" in METHODS  # the others still load
    fine_module = sys.modules[module_name(good)]
    with pytest.raises(ContribError, match="boom"):  # failures are retried, and fail again ...
        load_contrib_methods(baselines)
    assert sys.modules[module_name(good)] is fine_module  # ... the good file is not re-imported
