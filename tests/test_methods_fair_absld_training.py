"""fair_ard and absld in the trainer: their per-class state is checkpointed and a resumed run
(1 epoch + resume + 1) ends bitwise equal to an uninterrupted one (2 epochs); the contract
checks pass for every fair_ard base."""

from __future__ import annotations

import pytest
import torch
from stepkit import same_run, tiny_cfg

import ardbench.train.check as check
from ardbench.methods import build_method


@pytest.mark.parametrize(
    "method,sets", [("fair_ard", {}), ("fair_ard", {"base": "mtard"}), ("absld", {})]
)
def test_state_is_checkpointed_and_resume_is_bitwise(
    tiny_npz, teacher_file, tmp_path, method, sets
):
    cfg = tiny_cfg(method, tiny_npz, teacher_file, epochs=2, **sets)
    ckpt, _ = same_run(cfg, tmp_path)
    state = ckpt["method"]
    assert int(state["state_epoch"]) == 1
    if method == "fair_ard":
        # the weights of epoch 1 came from epoch 0's counts: not all 1 any more
        assert state["class_w"].shape == (10,) and not torch.all(state["class_w"] == 1)
        assert int(state["seen"]) == 48
    else:
        assert not torch.all(state["temps"] == 1) and float(state["loss_sum"].sum()) > 0


@pytest.mark.parametrize("base", ["ard", "iad", "rslad", "mtard"])
def test_contract_checks_pass_for_every_base(monkeypatch, base):
    def build(name, overrides=None):
        return build_method(name, {"base": base} if name == "fair_ard" else overrides)

    monkeypatch.setattr(check, "build_method", build)
    results = check.run_contract_checks("fair_ard")
    failed = [(r.name, r.detail) for r in results if not r.passed]
    assert not failed
