"""The column registry: a column registered here, in the test alone (a PGD-5 variant), is
evaluated, recorded in the eval block and rendered in a leaderboard table, and adding it to
every protocol's evaluation changes no committed protocol identity (the later-column rule)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ardbench.attacks import ce_objective, pgd
from ardbench.cli import main
from ardbench.errors import ConfigError
from ardbench.eval import evaluate_model, model_info, parse_attacks
from ardbench.eval.columns import per_point_start, pgd_points
from ardbench.protocols import EvalConfig, all_protocols, derive, get_protocol, protocol_ref
from ardbench.protocols.builtin_columns import pgd_settings
from ardbench.protocols.column import Column, PointContext, SettingsContext
from ardbench.protocols.columns import (
    COLUMN_TITLES,
    COLUMNS,
    register_column,
    unregister_column,
)
from ardbench.protocols.run_config import computation_dict
from ardbench.results.records import example_record, write_record
from ardbench.results.schema import COLUMNS as SCHEMA_COLUMNS
from ardbench.results.tables import COLUMN_TITLES as TABLE_TITLES

GOLDEN = Path(__file__).parent / "golden" / "protocols.json"
EPS = 8 / 255


def _pgd5_settings(ctx: SettingsContext) -> dict:
    return pgd_settings(ctx, loss="ce", steps=5)


@pytest.fixture
def pgd5() -> Iterator[list[PointContext]]:
    """PGD-5 registered for one test (its attack records every context it is called with)."""
    calls: list[PointContext] = []

    def attack(model, x, y, ctx: PointContext):
        calls.append(ctx)
        return pgd_points(model, x, y, ctx)

    register_column(Column("pgd5", "PGD-5", _pgd5_settings, attack=attack, aliases=("pgd-5",)))
    try:
        yield calls
    finally:
        unregister_column("pgd5")
    assert "pgd5" not in COLUMNS


def _model_and_points(n: int = 24) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    ).eval()
    x = torch.rand(n, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 10  # a few points wrong clean
    return model, x, y


def test_the_builtins_are_registrations_and_results_reads_the_registry():
    assert tuple(COLUMNS) == ("clean", "fgsm", "pgd20", "cw", "aa")
    assert SCHEMA_COLUMNS is COLUMNS and TABLE_TITLES is COLUMN_TITLES
    assert dict(COLUMN_TITLES) == {
        "clean": "Clean",
        "fgsm": "FGSM",
        "pgd20": "PGD-20",
        "cw": "CW∞",
        "aa": "AA",
    }
    with pytest.raises(ConfigError, match="eval.attacks must be one of .*got 'pgd5'"):
        EvalConfig(attacks=("clean", "pgd5"))
    with pytest.raises(ConfigError, match="already a registered column"):
        register_column(Column("pgd", "PGD", _pgd5_settings))  # an alias of pgd20
    with pytest.raises(ConfigError, match="built in"):
        unregister_column("aa")


def test_a_registered_column_is_evaluated(pgd5):
    assert COLUMNS[-1] == "pgd5" and COLUMN_TITLES["pgd5"] == "PGD-5"
    assert parse_attacks("pgd-5,pgd20") == ("clean", "pgd20", "pgd5")
    model, x, y = _model_and_points()
    res = evaluate_model(model, x, y, attacks="clean,pgd20,pgd5", eps=EPS, batch_size=64, seed=3)

    assert [c.settings["steps"] for c in pgd5] == [5] and pgd5[0].column == "pgd5"
    assert res.settings["pgd5"]["steps"] == 5 and res.settings["pgd20"]["steps"] == 20
    # the same PGD-5, by hand: per-point starts seeded by (seed, "pgd5"), worst case with clean
    start = per_point_start(x, EPS, "Linf", seed=3, column="pgd5", start=0)
    x_adv = pgd(
        x, ce_objective(model, y), eps=EPS, step=EPS / 4, steps=5, clamp_start=True, delta0=start
    )
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y) & (model(x).argmax(1) == y)
    assert res.accuracy["pgd5"] == pytest.approx(robust.float().mean().item())
    assert res.accuracy["pgd5"] <= res.accuracy["clean"] == 20 / 24
    assert res.to_dict()["attacks"] == ["clean", "pgd20", "pgd5"]


def test_a_registered_column_feeds_model_info_as_an_external_attack(pgd5):
    model, x, y = _model_and_points()
    res = evaluate_model(model, x, y, attacks="clean,pgd5", eps=EPS)
    res.accuracy["aa"] = 1.0  # AutoAttack itself is not run here: only the roles are read
    info = model_info(res)
    assert info["external"] == f"{100 * res.accuracy['pgd5']:.2f}"
    assert info["clean_acc"] == f"{100 * res.accuracy['clean']:.2f}"


def _golden_identities() -> dict[str, str]:
    return {name: p["identity"] for name, p in json.loads(GOLDEN.read_text()).items()}


def test_adding_a_registered_column_keeps_every_committed_identity(pgd5):
    golden = _golden_identities()
    assert {p.name: p.identity() for p in all_protocols()} == golden
    for p in all_protocols():
        with_pgd5 = derive(p, p.name, p.description, eval={"attacks": (*p.eval.attacks, "pgd5")})
        assert "pgd5" in with_pgd5.eval.attacks
        assert with_pgd5.identity() == golden[p.name], p.name
    # a built-in column is part of the identity, as it always was
    std = get_protocol("standard-cifar10")
    fewer = derive(std, std.name, std.description, eval={"attacks": ("clean", "pgd20")})
    assert fewer.identity() != std.identity()
    # and of the config hash the same way: the later column drops out
    config = {"method": "kd", "protocol": std.name, **copy.deepcopy(std.sections())}
    more = copy.deepcopy(config)
    more["eval"]["attacks"] = [*config["eval"]["attacks"], "pgd5"]
    assert computation_dict(more) == computation_dict(config)


def test_a_registered_column_is_recorded_and_rendered(pgd5, tmp_path, capsys):
    model, x, y = _model_and_points()
    res = evaluate_model(model, x, y, attacks="clean,fgsm,pgd20,cw,pgd5", eps=EPS, seed=0)
    std = get_protocol("standard-cifar10")
    config = {"method": "kd", "protocol": std.name, **copy.deepcopy(std.sections())}
    config["eval"]["attacks"] = [*config["eval"]["attacks"], "pgd5"]
    ref = protocol_ref(config, None)
    assert ref["identity"] == ref["registered_identity"] and not ref["modified"]
    record = example_record(
        run_id="kd-pgd5-s0", config=config, protocol=ref, eval=res.to_dict(), epochs=200
    )
    write_record(tmp_path / "runs" / "kd-pgd5-s0.json", record)
    stored = json.loads((tmp_path / "runs" / "kd-pgd5-s0.json").read_text())
    assert stored["eval"]["accuracy"]["pgd5"] == res.accuracy["pgd5"]
    assert stored["eval"]["settings"]["pgd5"]["steps"] == 5

    out = tmp_path / "board"
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    tables = [p for p in out.rglob("*.md") if p.name != "README.md"]
    assert len(tables) == 1
    text = tables[0].read_text()
    head = next(line for line in text.splitlines() if line.startswith("| # |"))
    cells = [c.strip() for c in head.strip("|").split("|")]
    assert cells[3:9] == ["Clean", "FGSM", "PGD-20", "CW∞", "AA", "PGD-5"]
    row = next(line for line in text.splitlines() if line.startswith("| – | kd |"))  # listed
    values = [c.strip() for c in row.strip("|").split("|")]
    assert values[8] == f"{100 * res.accuracy['pgd5']:.2f} ± —"  # one seed: no std
    assert values[5] == f"{100 * res.accuracy['pgd20']:.2f} ± —"
    assert values[7] == "—"  # no AA in this record
