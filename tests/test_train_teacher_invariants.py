"""The trainer freezes the teacher itself (issue 28, item 5), on a fixture where it matters.

The loader hands the teacher over in *train* mode with gradients on (a loader that forgets, or
a third-party one); the teacher has BatchNorm, so one forward in train mode would move its
running statistics. Through a whole run the trainer must keep it in eval mode without parameter
gradients: its weights and buffers stay bit-identical and no forward sees it training.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import ardbench.train.setup as setup_mod
from ardbench.recipes import resolve_config
from ardbench.train.trainer import train


def _cfg(npz, teacher_file, method):
    return resolve_config(
        method,
        cli={
            "dataset": f"npz:{npz}",
            "student": "small_cnn",
            "teacher": f"small_cnn:{teacher_file}",
            "train": {"epochs": 2},
        },
        sets=[
            "train.batch_size=16",
            "attack.steps=2",
            "eval.batch_size=16",
            "eval.attacks=clean",
            "train.lr_schedule=constant",
        ],
    )


@pytest.mark.parametrize("method", ["kd", "rslad"])
def test_trainer_freezes_a_teacher_handed_over_training(
    method, tiny_npz, teacher_file, tmp_path, monkeypatch
):
    handed: dict[str, Any] = {}
    real_load = setup_mod.load_model

    def careless_loader(spec, **kw):
        loaded = real_load(spec, **kw)
        if spec == f"small_cnn:{teacher_file}":
            loaded.module.train().requires_grad_(True)  # what a careless loader returns
            handed["module"] = loaded.module
            handed["state"] = {k: v.clone() for k, v in loaded.module.state_dict().items()}
        return loaded

    monkeypatch.setattr(setup_mod, "load_model", careless_loader)
    modes: list[bool] = []

    def spy(module: nn.Module, inputs: Any) -> None:
        # during training only: the teacher check before it restores what it was given
        if handed.get("training_started"):
            modes.append(module.training)

    def on_epoch(run_dir, row):
        handed["epochs"] = handed.get("epochs", 0) + 1

    real_build = setup_mod.make_loader

    def make_loader(*a, **k):
        teacher = handed["module"]
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.register_forward_pre_hook(spy)
        handed["training_started"] = True
        return real_build(*a, **k)

    monkeypatch.setattr(setup_mod, "make_loader", make_loader)
    res = train(
        _cfg(tiny_npz, teacher_file, method),
        runs_dir=tmp_path / "runs",
        progress=False,
        on_epoch=on_epoch,
    )
    assert res.completed and handed["epochs"] == 2
    teacher = handed["module"]
    assert modes and not any(modes), "a teacher forward ran in train mode"
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad or p.grad is not None for p in teacher.parameters())
    after = teacher.state_dict()
    moved = [k for k, v in handed["state"].items() if not torch.equal(v, after[k])]
    assert not moved, f"teacher changed: {moved[:3]}"
