"""The training step reads no tensor value on the host (issue 14): counted, for every method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ardbench.methods import METHODS, Batch, Method, MethodConfig
from ardbench.protocols import AttackConfig, TrainConfig
from ardbench.train.check import run_contract_checks, tiny_setup
from ardbench.train.host_reads import count_host_reads
from ardbench.train.speed import SpeedPlan, make_optimizer
from ardbench.train.step import TrainStep, make_attack_fn

ATTACK = AttackConfig(eps=8 / 255, step=2 / 255, steps=2)


def runner_for(method, student, teacher, extras) -> TrainStep:
    plan = SpeedPlan(device="cpu")
    params = list(student.parameters()) + list(method.parameters())
    return TrainStep(
        method=method,
        method_name=type(method).registry_name or "m",
        student=student,
        teacher=teacher,
        extras=extras,
        optimizer=make_optimizer(params, TrainConfig(), plan),
        attack_fn=make_attack_fn(student, ATTACK),
        attack_cfg=ATTACK,
        plan=plan,
        num_classes=10,
        total_epochs=200,
        steps_per_epoch=4,  # per-step schedules (adr)
    )


@pytest.mark.parametrize("name", METHODS.names())
def test_training_steps_make_no_host_read(name):
    method, student, teacher, extras, batch = tiny_setup(name)
    runner = runner_for(method, student, teacher, extras)
    with count_host_reads() as reads:
        for i, epoch in enumerate((0, 1, 199, 199)):  # both sides of epoch-dependent switches
            b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index)
            runner(b, epoch=epoch, step=i)
    assert reads.count == 0, reads.describe()
    summary = runner.stats.read()  # the one read, after the steps
    assert summary.examples == 4 * len(batch.y) and not summary.bad_terms


def test_the_probe_sees_reads():
    x = torch.ones(3)
    with count_host_reads() as reads:
        float(x.sum())
        if x[0] > 0:
            x.tolist()
    assert [name for name, _ in reads.calls] == ["__float__", "__bool__", "tolist"]
    assert x.sum().item() == 3.0  # restored


def test_check_catches_a_method_that_reads_the_host(monkeypatch):
    class Reads(Method):
        """A test method that reads its loss on the host (not allowed)."""

        class Config(MethodConfig):
            pass

        def losses(self, student, teacher, batch, ctx):
            ce = F.cross_entropy(student(batch.x), batch.y)
            if ce > 100:  # a Python branch on a tensor value: a host read
                ce = ce * 0
            return {"ce_nat": ce}

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    METHODS.register("reads_host")(Reads)
    results = {r.name: r for r in run_contract_checks("reads_host")}
    (probe,) = [r for name, r in results.items() if name.startswith("no host reads")]
    assert not probe.passed and "__bool__" in probe.detail


def test_the_probe_sees_syncs_made_below_python():
    """Synchronising ATen operators that no patched Tensor method sees (issue 27)."""
    x = torch.randn(6)
    with count_host_reads() as reads:
        torch.equal(x, x)
        x.nonzero()
        x[x > 0]  # boolean-mask indexing: nonzero inside
        torch.tensor([1.0, 2.0])  # from Python data: a host-to-device copy on a GPU
        torch.masked_select(x, x > 0)
    names = [name.split(" ")[0] for name, _ in reads.calls]
    assert names == ["torch.equal", "nonzero", "boolean-mask", "torch.tensor(...)", "masked_select"]
    assert all("test_train_host_reads.py" in where for _, where in reads.calls)  # the caller


def test_the_probe_leaves_device_side_work_alone():
    x = torch.randn(6)
    with count_host_reads() as reads:
        torch.where(x > 0, x, 0.0).masked_fill(x < 0, 1.0)
        x[torch.arange(3)]  # integer indexing: no value read
        float(x.sum())  # one read, counted once (not again as _local_scalar_dense)
    assert [name for name, _ in reads.calls] == ["__float__"]
