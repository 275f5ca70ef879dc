"""Identities by property (issue 28, item 6), not only by pinned hashes.

For every setting: changing it changes each identity it belongs to, and changing a setting
declared outside an identity leaves it alone. The declarations below are the documented ones
(protocols/protocol.py, protocols/run_config.py, results/records.py), written out here rather
than imported, so a key slipping into or out of an implementation's skip list fails a test; a
section field that is not declared here fails :func:`test_every_setting_is_declared`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ardbench.errors import ConfigError

# The identity functions, imported in ONE place (they are moving into one identities module):
# a protocol's identity, a run config's computation hash and row hash, and a record's row key.
from ardbench.protocols import RunConfig
from ardbench.protocols import all_protocols as _all_protocols
from ardbench.protocols.protocol import identity_of
from ardbench.protocols.sections import (
    AMP_MODES,
    CROP_PADDINGS,
    EVAL_COLUMNS,
    LR_SCHEDULES,
    NORMS,
    RANDOM_STARTS,
    SECTIONS,
    STUDENT_MODES,
    TEACHER_CHECKS,
    build_section,
    section_dict,
)
from ardbench.results.records import protocol_hash as record_row_key


def run_hashes(cfg: dict[str, Any]) -> tuple[str, str, str]:
    """(computation hash, row hash, the record's row key) of a run's resolved config."""
    run = RunConfig.from_dict(cfg)
    return run.config_hash(), run.recipe_hash(), record_row_key({"config": cfg})


# ----------------------------------------------------------------------------- the settings

SPEED = ("channels_last", "compile", "fused_optimizer", "share_teacher", "cudnn_benchmark")
SPEED += ("cuda_graph",)
_radius = st.integers(1, 16).map(lambda k: f"{k}/255")
_auto_bool = st.sampled_from(["auto", True, False])

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "attack.norm": st.sampled_from(NORMS),
    "attack.eps": _radius,
    "attack.step": _radius,
    "attack.steps": st.integers(0, 20),
    "attack.random_start": st.sampled_from(RANDOM_STARTS),
    "attack.clamp_start": st.booleans(),
    "attack.student_mode": st.sampled_from(STUDENT_MODES),
    "train.epochs": st.integers(1, 300),
    "train.batch_size": st.integers(1, 1024),
    "train.lr": st.sampled_from([0.01, 0.05, 0.1, 0.2]),
    "train.momentum": st.sampled_from([0.0, 0.5, 0.9]),
    "train.weight_decay": st.sampled_from([0.0, 2e-4, 5e-4]),
    "train.nesterov": st.booleans(),
    "train.lr_schedule": st.sampled_from(LR_SCHEDULES),
    "train.milestones": st.lists(st.integers(0, 300), max_size=3).map(sorted),
    "train.gamma": st.sampled_from([0.1, 0.2, 0.5]),
    "train.augment": st.booleans(),
    "train.crop": st.sampled_from(CROP_PADDINGS),
    "train.flip": st.booleans(),
    "train.train_subset": st.none() | st.integers(1, 50_000),
    "train.holdout": st.none() | st.integers(1, 5_000),
    "train.seed": st.integers(0, 2**31),
    "train.deterministic": st.booleans(),
    "train.probe": st.integers(0, 1000),
    "train.teacher_check": st.sampled_from(TEACHER_CHECKS),
    **{f"train.{k}": _auto_bool for k in SPEED},
    "train.amp": st.sampled_from(AMP_MODES),
    # canonical column order (the evaluator computes them in that order)
    "eval.attacks": st.sets(st.sampled_from(EVAL_COLUMNS), min_size=1).map(
        lambda s: [c for c in EVAL_COLUMNS if c in s]
    ),
    "eval.n_examples": st.none() | st.integers(1, 10_000),
    "eval.eps": st.none() | _radius,
    "eval.batch_size": st.sampled_from(["auto", 64, 256, 1000]),
    "eval.aa_batch_size": st.integers(1, 1024),
    "checkpoint.rule": st.sampled_from(["last", "best-on-holdout", "swa"]),
    "checkpoint.swa_start": st.none() | st.integers(0, 300),
}

# no number a table shows depends on these (speed, determinism, the probe, the teacher check's
# reaction, the evaluation batch: random starts are drawn per point)
NEVER_COMPUTATION = {f"train.{k}" for k in SPEED} | {
    "train.probe",
    "train.teacher_check",
    "eval.batch_size",
}
# a protocol's identity: every setting but these (and the protocol's per-method keys)
OUTSIDE_PROTOCOL = NEVER_COMPUTATION | {"train.seed", "train.deterministic"}
# a leaderboard row: runs differing only by seed (AutoAttack's batch moves only its random
# inits); the data, teacher and student are the table's key
OUTSIDE_ROW = OUTSIDE_PROTOCOL | {"eval.aa_batch_size"}
# provenance and where files live: in no hash
PROVENANCE = {
    "recipe": st.sampled_from([None, "recipes/x.yaml", "rslad-cifar10"]),
    "data_dir": st.sampled_from([None, "/data", "~/d"]),
    "download": st.booleans(),
    "device": st.sampled_from(["auto", "cpu", "cuda:0"]),
    "protocol": st.sampled_from([None, "standard-cifar10", "small-track"]),
}
TOP = {
    "method": st.sampled_from(["kd", "rslad", "ard", "trades"]),
    "dataset": st.sampled_from(["cifar10", "cifar100", "digits"]),
    "teacher": st.sampled_from([None, "robustbench:Zhang2019", "resnet18:t.pt"]),
    "student": st.sampled_from(["resnet18", "mobilenetv2", "small_cnn"]),
    "method_config": st.sampled_from([{}, {"alpha": 0.5}, {"alpha": 0.9, "tau": 2.0}]),
}
ROW_KEY_PARTS = {"dataset", "teacher", "student"}  # the table's key, not the row's


def _protocols():
    return sorted(_all_protocols(), key=lambda p: p.name)


def test_every_setting_is_declared():
    fields = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert fields == set(VALUES), "declare new settings here (inside or outside identities)"
    top = {f.name for f in dataclasses.fields(RunConfig)} - set(SECTIONS) - {"paper"}
    assert top == set(TOP) | set(PROVENANCE)


# ------------------------------------------------------------------------------- helpers


def _canonical(section: str, values: dict[str, Any]) -> dict[str, Any]:
    return section_dict(build_section(SECTIONS[section], dict(values), section))


def _changed(config: dict[str, Any], key: str, value: Any) -> dict[str, Any] | None:
    """``config`` with ``key`` set to ``value``, or None when that is no change or invalid."""
    section, _, name = key.partition(".")
    new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    sub = dict(new.get(section) or {})
    sub[name] = value
    try:
        if _canonical(section, sub) == _canonical(section, new.get(section) or {}):
            return None
    except ConfigError:
        return None
    new[section] = sub
    return new


def _meaningless(config: dict[str, Any], key: str) -> bool:
    # without augmentation the crop border and the flip mean nothing (documented)
    return key in ("train.crop", "train.flip") and not _canonical(
        "train", config.get("train") or {}
    ).get("augment", True)


# every key is a parameter (so each is exercised on every run), a few draws each: parsing a
# config through the typed sections takes about 15 ms
_SETTINGS = settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_KEYS = pytest.mark.parametrize("key", sorted(VALUES))


# ------------------------------------------------------------------------------ properties


@_KEYS
@_SETTINGS
@given(data=st.data())
def test_protocol_identity_moves_with_its_settings_only(data, key):
    p = data.draw(st.sampled_from(_protocols()), label="protocol")
    base = p.sections()
    new = _changed(base, key, data.draw(VALUES[key], label=key))
    assume(new is not None)
    before = identity_of(base, p.per_method, p.data_fingerprint)
    after = identity_of(new, p.per_method, p.data_fingerprint)
    outside = key in OUTSIDE_PROTOCOL or key in p.per_method or _meaningless(base, key)
    assert (before == after) == outside, f"{p.name}: {key} -> {new[key.split('.')[0]]}"


def test_protocol_identity_moves_with_its_data():
    for p in _protocols():
        base = p.sections()
        ident = identity_of(base, p.per_method, p.data_fingerprint)
        if p.data_fingerprint:
            assert identity_of(base, p.per_method, "f" * 64) != ident
        else:
            other = "cifar100" if base["dataset"] != "cifar100" else "cifar10"
            assert identity_of({**base, "dataset": other}, p.per_method) != ident


def _run_config(data, p) -> dict[str, Any]:
    cfg: dict[str, Any] = {k: data.draw(s, label=k) for k, s in TOP.items()}
    cfg.update({k: data.draw(s, label=k) for k, s in PROVENANCE.items()})
    cfg.update({s: dict(v) for s, v in p.sections().items() if s in SECTIONS})
    return cfg


@_KEYS
@_SETTINGS
@given(data=st.data())
def test_run_hashes_move_with_their_settings_only(data, key):
    p = data.draw(st.sampled_from(_protocols()), label="protocol")
    base = _run_config(data, p)
    new = _changed(base, key, data.draw(VALUES[key], label=key))
    assume(new is not None)
    meaningless = _meaningless(base, key)
    computation = key not in NEVER_COMPUTATION and not meaningless
    row = key not in OUTSIDE_ROW and not meaningless
    moved = [a != b for a, b in zip(run_hashes(base), run_hashes(new), strict=True)]
    assert moved == [computation, row, row], key


@pytest.mark.parametrize("key", sorted(TOP) + sorted(PROVENANCE))
@_SETTINGS
@given(data=st.data())
def test_run_hashes_and_the_top_level(data, key):
    p = data.draw(st.sampled_from(_protocols()), label="protocol")
    base = _run_config(data, p)
    value = data.draw((TOP | PROVENANCE)[key], label=key)
    assume(value != base[key])
    new = {**base, key: value}
    computation = key in TOP
    row = key in TOP and key not in ROW_KEY_PARTS
    moved = [a != b for a, b in zip(run_hashes(base), run_hashes(new), strict=True)]
    assert moved == [computation, row, row], key
