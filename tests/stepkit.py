"""Tiny training steps and runs the trainer, speed, graph and method tests share.

- the trainer's step on tiny models (``tiny_runner``, ``step_values``, ``run_steps``) and the
  comparison of two such runs (``assert_same``), from the speed tests;
- the eager and captured plans of the CUDA-graph tests and their comparison;
- tiny run configs (``tiny_cfg`` for trainer runs, ``speed_cfg`` for the speed tests) and an
  uninterrupted run against a stopped and resumed one (``same_run``).

A helper module, not a test module: test modules import it; it holds no tests.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ardbench.methods import Batch
from ardbench.protocols import AttackConfig, TrainConfig
from ardbench.recipes import resolve_config
from ardbench.train.check import tiny_setup
from ardbench.train.speed import SpeedPlan, compile_settings, make_optimizer, prepare_models
from ardbench.train.step import TrainStep, make_attack_fn
from ardbench.train.trainer import resume, train

# ------------------------------------------------------------------ one step on tiny models

METHODS = ("natural", "kd", "pgd_at", "trades", "ard", "iad", "rslad", "kdiga", "vargap")
TRAIN = TrainConfig(lr=0.1, momentum=0.9, weight_decay=5e-4)
ATTACK = AttackConfig(eps=8 / 255, step=2 / 255, steps=2)


def tiny_runner(
    built, method_name, student, teacher, extras, plan, graph_backend=None
) -> TrainStep:
    """The trainer's step on tiny models under ``plan`` (models prepared, optimizer built;
    ``graph_backend``: the capture backend when ``plan.cuda_graph``, e.g. ``EagerReplay``)."""
    prepare_models(plan, student, teacher, *extras.values())
    params = list(student.parameters()) + list(built.parameters())
    return TrainStep(
        method=built,
        method_name=method_name,
        student=student,
        teacher=teacher,
        extras=extras,
        optimizer=make_optimizer(params, TRAIN, plan),
        attack_fn=make_attack_fn(student, ATTACK),
        attack_cfg=ATTACK,
        plan=plan,
        num_classes=10,
        total_epochs=200,
        graph_backend=graph_backend,
    )


def step_values(runner: TrainStep, batch: Batch, **kw) -> dict[str, float]:
    """One step; its loss terms (and their sum, ``loss``) read on the host, for comparison."""
    terms = runner(batch, **kw)
    values = {k: float(v) for k, v in terms.items()}
    values["loss"] = float(sum(terms.values()))
    return values


def run_steps(method_name: str, *, steps: int = 2, epoch: int = 199, method=None, **plan_kw):
    """Two TrainSteps on tiny models; returns (per-step values and grads, final params, runner).

    The base plan is the plain path (everything off); ``plan_kw`` switches features on.
    """
    built, student, teacher, extras, batch = tiny_setup(method_name)
    if method is not None:  # a test-only method on the same tiny networks
        built = method
    plan = SpeedPlan(device="cpu", **{"share_teacher": False, **plan_kw})
    runner = tiny_runner(built, method_name, student, teacher, extras, plan)
    torch.manual_seed(1234)  # the attacks' random starts
    out = []
    for i in range(steps):
        b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index)
        with compile_settings(plan, plan.compile):
            values = step_values(runner, b, epoch=epoch, step=i)
        grads = {
            n: p.grad.detach().clone() for n, p in student.named_parameters() if p.grad is not None
        }
        out.append((values, grads))
    final = {n: p.detach().clone() for n, p in student.state_dict().items()}
    return out, final, runner


def assert_same(a, b, rtol=1e-4, atol=1e-5, loss_atol=None):
    """``loss_atol``: the loss terms' absolute tolerance, when it must differ from ``atol``."""
    (steps_a, params_a, _), (steps_b, params_b, _) = a, b
    loss_atol = atol if loss_atol is None else loss_atol
    for (va, ga), (vb, gb) in zip(steps_a, steps_b, strict=True):
        assert va.keys() == vb.keys()
        for k in va:
            assert va[k] == pytest.approx(vb[k], rel=rtol, abs=loss_atol), k
        assert ga.keys() == gb.keys()
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=k)
    for k in params_a:
        torch.testing.assert_close(params_a[k], params_b[k], rtol=rtol, atol=atol, msg=k)


# ------------------------------------------------------------------ captured vs eager

WARMUP = 2


def plans() -> tuple[SpeedPlan, SpeedPlan]:
    """(eager, captured): the same features but the capture (fused SGD on both sides)."""
    eager = SpeedPlan(device="cpu", fused_optimizer=True, share_teacher=True)
    return eager, dataclasses.replace(eager, cuda_graph=True, notes=[])


def assert_runs_agree(a, b, rtol=1e-5, atol=1e-6):
    (va, fa, _), (vb, fb, _) = a, b
    assert len(va) == len(vb)
    for i, (x, y) in enumerate(zip(va, vb, strict=True)):
        assert x.keys() == y.keys(), i
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=rtol, abs=atol), (i, k)
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], rtol=rtol, atol=atol, msg=k)


# ------------------------------------------------------------------ tiny runs


def tiny_cfg(method, npz, teacher=None, epochs=3, **sets):
    """A tiny run config (small_cnn on the tiny npz, 2-step attacks, milestone at epoch 2)."""
    extra = [f"{k}={v}" for k, v in sets.items()]
    cli = {"dataset": f"npz:{npz}", "student": "small_cnn", "train": {"epochs": epochs}}
    if teacher:
        cli["teacher"] = f"small_cnn:{teacher}"
    return resolve_config(
        method,
        cli=cli,
        sets=[
            "train.batch_size=16",
            "attack.steps=2",
            "eval.batch_size=16",
            "eval.attacks=clean,pgd20",
            "train.milestones=[2]",
            "train.lr_schedule=multistep",
            *extra,
        ],
    )


def speed_cfg(method, npz, epochs=2, *sets):
    """A tiny run config for the speed tests: ``sets`` are ``key=value`` strings."""
    return resolve_config(
        method,
        cli={"dataset": f"npz:{npz}", "student": "small_cnn", "train": {"epochs": epochs}},
        sets=[
            "train.batch_size=16",
            "attack.steps=2",
            "eval.batch_size=16",
            "eval.attacks=clean,pgd20",
            *sets,
        ],
    )


def same_run(cfg, tmp_path):
    """An uninterrupted run and one stopped after epoch 1 and resumed: their checkpoints."""
    full = train(cfg, runs_dir=tmp_path / "a", progress=False)
    part = train(cfg, runs_dir=tmp_path / "b", progress=False, stop_after_epoch=1)
    done = resume(part.run_dir, progress=False)
    a = torch.load(full.run_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(done.run_dir / "checkpoint.pt", weights_only=True)
    for part_name in ("student", "method", *(["swa"] if "swa" in a else [])):
        assert a[part_name].keys() == b[part_name].keys()
        for k in a[part_name]:
            assert torch.equal(a[part_name][k], b[part_name][k]), (part_name, k)
    return a, full
