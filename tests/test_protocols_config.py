from __future__ import annotations

import pytest

from ardbench.protocols import (
    AttackConfig,
    ConfigError,
    RunConfig,
    TrainConfig,
    computation_dict,
    format_eps,
    parse_number,
)
from ardbench.recipes import load_recipe_file, parse_set, resolve_config


def test_parse_number_accepts_fractions_and_floats():
    assert parse_number("8/255") == 8 / 255
    assert parse_number(0.031) == 0.031
    assert parse_number("2e-4") == 2e-4
    assert parse_number("0.5/255") == 0.5 / 255
    with pytest.raises(ConfigError, match="8/255"):
        parse_number("eight")


def test_format_eps():
    assert format_eps(8 / 255) == "8/255"
    assert format_eps(0.031) == "0.031"


def test_attack_config_rejects_bad_choice():
    with pytest.raises(ConfigError, match="random_start"):
        AttackConfig(random_start="gauss")


def test_recipe_unknown_key_is_named(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("method: kd\ntrain: {epochs: 3, learning_rate: 0.1}\n")
    with pytest.raises(ConfigError, match="'learning_rate' in recipe .*train.*lr_schedule"):
        load_recipe_file(p)
    p.write_text("method: kd\nepochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_recipe_file(p)


def test_set_overrides_sections_and_bare_keys():
    layer = parse_set(
        ["train.epochs=5", "attack.eps=8/255", "adv_weight=0.5", "student=resnet18", "steps=3"],
        method_config_keys=["adv_weight"],
    )
    assert layer == {
        "train": {"epochs": 5},
        "attack": {"eps": "8/255", "steps": 3},
        "method_config": {"adv_weight": 0.5},
        "student": "resnet18",
    }
    with pytest.raises(ConfigError, match="ambiguous"):
        parse_set(["batch_size=4"])  # train and eval both have it
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*(?i:did you mean) 'epochs'"):
        parse_set(["epoch=4"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["epochs"])


def test_resolution_order_faithful_then_preset_then_cli_then_set():
    cfg = resolve_config("trades")
    assert cfg.attack.eps == 0.031 and cfg.train.epochs == 76  # the official code's protocol
    assert cfg.protocol == "trades-cifar10"
    cfg = resolve_config("trades", preset="demo")
    assert cfg.dataset == "digits" and cfg.attack.eps == 8 / 255
    assert cfg.attack.random_start == "gaussian_0.001"  # faithful detail kept under the preset
    cfg = resolve_config(
        "trades", preset="demo", cli={"train": {"epochs": 2}}, sets=["train.epochs=3", "beta=1"]
    )
    assert cfg.train.epochs == 3 and cfg.method_config["beta"] == 1.0
    assert cfg.recipe == "preset:demo"


def test_method_config_is_validated():
    with pytest.raises(ConfigError, match="unknown key 'bta'.*(?i:did you mean) 'beta'"):
        resolve_config("trades", sets=["method_config.bta=1"])


def test_config_roundtrip_and_hash():
    cfg = resolve_config("kd", preset="demo")
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash() == cfg.config_hash()
    other = resolve_config("kd", preset="demo", sets=["train.seed=1"])
    assert other.config_hash() != cfg.config_hash()


def test_dataclasses_are_frozen():
    cfg = RunConfig(method="kd", train=TrainConfig(epochs=1))
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 2  # type: ignore[misc]


def test_speed_flags_and_absent_optional_keys_do_not_change_the_hash():
    base = resolve_config("kd", preset="demo")
    fast = resolve_config(
        "kd", preset="demo", sets=["train.channels_last=true", "train.compile=false"]
    )
    assert fast.config_hash() == base.config_hash()
    bf16 = resolve_config("kd", preset="demo", sets=["train.amp=bf16"])
    assert bf16.config_hash() != base.config_hash()  # bf16 changes the numerics
    d = base.to_dict()
    d["train"].pop("holdout")  # a record written before the key existed
    assert computation_dict(d) == computation_dict(base.to_dict())
