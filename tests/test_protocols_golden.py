"""Every named protocol's resolved values and every method Config's defaults, pinned.

``tests/golden/protocols.json`` and ``tests/golden/method_configs.json`` were checked by hand
against ``../shared/reference/methods.md`` (and, for the later methods, the official code
notes behind it) once; these tests keep them. A deliberate change regenerates them with
``ARDBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_protocols_golden.py`` and is reviewed
in the diff. Only the built-ins are pinned (``tests/goldens.py``): a submitted method is not.
"""

from __future__ import annotations

import os

import pytest
from goldens import golden_problems, update_golden

from ardbench.methods import METHODS
from ardbench.protocols import all_protocols


@pytest.mark.parametrize("name", ["protocols", "method_configs"])
def test_golden(name):
    if os.environ.get("ARDBENCH_UPDATE_GOLDEN"):
        update_golden(name)
    assert golden_problems(name) == []


def test_golden_pins_the_builtins(monkeypatch):
    """A removed or renamed built-in fails; a protocol registered for it is then extra."""
    METHODS.names()  # run the pending loaders first
    entries = dict(METHODS._entries)
    monkeypatch.setattr(METHODS, "_entries", {k: v for k, v in entries.items() if k != "kd"})
    assert golden_problems("method_configs") == ["built-in 'kd' was removed or renamed"]
    renamed = {("kd2" if k == "kd" else k): v for k, v in entries.items()}
    monkeypatch.setattr(METHODS, "_entries", renamed)
    assert golden_problems("method_configs") == [
        "built-in 'kd' was removed or renamed",
        "built-in 'kd2' is not in the golden file",
    ]


def test_faithful_values_from_the_reference():
    """A few values straight from methods.md, independent of the golden files."""
    p = {q.name: q for q in all_protocols()}
    assert p["ard-cifar10"].train.lr_schedule == "ard_as_coded"
    assert p["ard-cifar100"].train.batch_size == 256  # ARD C100
    assert p["iad-cifar10"].train.seed == 1 and p["iad-cifar100"].train.batch_size == 128
    assert p["rslad-cifar10"].train.epochs == 300
    assert list(p["rslad-cifar10"].train.milestones) == [215, 260, 285]
    assert p["rslad-cifar10"].attack.random_start == "gaussian_0.001"
    assert p["trades-cifar10"].attack.eps == 0.031 and p["trades-cifar10"].attack.step == 0.007
    assert p["trades-cifar10"].train.epochs == 76
    assert p["kdiga-cifar10"].attack.step == pytest.approx(16 / 255 / 10)
    assert p["pgd-at-cifar10"].attack.clamp_start is True
    assert p["pgd-at-cifar10"].train.lr_schedule == "piecewise_epoch_plus_one"
    assert p["natural-cifar10"].train.deterministic is True
    assert p["adaad-cifar10"].train.weight_decay == 5e-4 and p["adaad-cifar10"].train.seed == 42
    assert list(p["peeraid-cifar10"].train.milestones) == [214, 259, 284]
    assert p["peeraid-cifar10"].checkpoint.rule == "swa"
    assert p["peeraid-cifar10"].checkpoint.swa_start == 214
    assert list(p["mtard-cifar10"].train.milestones) == [215, 260, 285]
    assert p["standard-cifar10"].train.weight_decay == 5e-4
    assert p["standard-cifar10"].attack.student_mode == "eval"


def test_vargap_has_one_source_for_its_defaults():
    """The sweep's alpha/beta/gamma live in the Config only: no faithful recipe restates them."""
    from ardbench.paths import baselines_dir
    from ardbench.recipes import load_recipe_file, resolve_config

    cfg = METHODS.get("vargap").Config()
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (0.5, 0.1, 0.1)
    for path in sorted((baselines_dir() / "vargap").glob("*.yaml")):
        layer = load_recipe_file(path)
        assert not {"alpha", "beta", "gamma"} & set(layer.get("method_config") or {}), path
        resolved = resolve_config("vargap", recipe=str(path))
        assert resolved.method_config["alpha"] == 0.5, path


def test_recipes_state_only_what_differs():
    """No recipe restates a protocol value or a method default (they would drift apart)."""
    from ardbench.paths import baselines_dir
    from ardbench.protocols import get_protocol
    from ardbench.protocols.sections import SECTIONS, build_section, section_dict
    from ardbench.recipes import load_recipe_file

    for path in sorted(baselines_dir().glob("*/*.yaml")):
        layer = load_recipe_file(path)
        if "protocol" not in layer:
            continue
        proto = get_protocol(layer["protocol"])
        for section in SECTIONS:
            given = layer.get(section) or {}
            base = section_dict(getattr(proto, section))
            mine = section_dict(build_section(SECTIONS[section], given, section))
            same = [k for k in given if mine[k] == base[k]]
            assert not same, f"{path}: {section}.{same} restate the protocol"
        method = layer.get("method")
        if method:
            defaults = METHODS.get(method).Config().to_dict()
            same = [
                k for k, v in (layer.get("method_config") or {}).items() if defaults.get(k) == v
            ]
            assert not same, f"{path}: method_config {same} restate the method's defaults"
