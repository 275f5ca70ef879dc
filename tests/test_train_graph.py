"""The captured step's orchestration, on the CPU (issue 14; ardbench/train/graph.py).

CUDA graphs need a GPU; what they replay is checked against eager steps in
``tests/test_train_cuda.py`` (marked ``gpu``). Here :class:`~ardbench.train.graph.EagerReplay`
stands in for the CUDA backend: "capture" runs the step once, a "replay" runs the same call
again with the static input buffers and the *capture's* epoch and step, as a graph would. So
these tests check everything but CUDA itself: when the step warms up, captures, replays, runs
eagerly (other shapes, fallback) and captures again (capture keys, per-epoch methods, a
replaced learning rate); that replays give the eager step's losses and weights for every
method; the device-tensor learning rate through schedule, checkpoint and resume; how
``cuda_graph`` resolves.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from stepkit import (
    METHODS,
    TRAIN,
    WARMUP,
    assert_runs_agree,
    plans,
    speed_cfg,
    step_values,
    tiny_runner,
)

from ardbench.errors import ConfigError
from ardbench.methods import Batch, Method, MethodConfig, get_method
from ardbench.protocols import TrainConfig
from ardbench.train import graph as graph_module
from ardbench.train.check import tiny_setup
from ardbench.train.graph import CapturedStep, EagerReplay
from ardbench.train.speed import (
    make_optimizer,
    optimizer_state,
    resolve_speed,
    set_lr,
    set_optimizer_impl,
)
from ardbench.train.trainer import resume, train


def half(batch: Batch) -> Batch:
    n = len(batch.y) // 2
    return Batch(x=batch.x[:n], y=batch.y[:n], index=batch.index[:n])


def run(name, plan, schedule, *, method=None, backend=None, lrs=None):
    """One step per (epoch, full batch?) entry of ``schedule``; returns (values, final
    state, runner). ``lrs``: {epoch: lr} written with ``set_lr`` when the epoch starts."""
    built, student, teacher, extras, batch = tiny_setup(name)
    if method is not None:
        built = method
    runner = tiny_runner(built, name, student, teacher, extras, plan, backend or EagerReplay())
    if runner.graph is not None:
        runner.graph.warmup_steps = WARMUP
    torch.manual_seed(1234)
    values, last_epoch = [], None
    for i, (epoch, full) in enumerate(schedule):
        if lrs and epoch != last_epoch and epoch in lrs:
            set_lr(runner.optimizer, lrs[epoch])
        last_epoch = epoch
        b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index.roll(i, 0))
        values.append(step_values(runner, b if full else half(b), epoch=epoch, step=i))
    final = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return values, final, runner


# --------------------------------------------------------------------------- resolution


def test_cuda_graph_resolves_on_for_cuda_only():
    assert resolve_speed(TrainConfig(), "cuda").cuda_graph  # resolution only: no GPU needed
    cpu = resolve_speed(TrainConfig(), "cpu")
    assert not cpu.cuda_graph and not cpu.notes
    asked = resolve_speed(TrainConfig(cuda_graph=True), "cpu")
    assert not asked.cuda_graph and any("need a CUDA device" in n for n in asked.notes)
    assert not resolve_speed(TrainConfig(cuda_graph=False), "cuda").cuda_graph


def test_cuda_graph_needs_fused_sgd_and_methods_may_opt_out():
    auto = resolve_speed(TrainConfig(fused_optimizer=False), "cuda")
    assert not auto.cuda_graph and any("fused_optimizer" in n for n in auto.notes)
    with pytest.raises(ConfigError, match="fused"):
        resolve_speed(TrainConfig(fused_optimizer=False, cuda_graph=True), "cuda")

    class NoGraph(Method):
        supports_cuda_graph = False

    plan = resolve_speed(TrainConfig(), "cuda", NoGraph)
    assert not plan.cuda_graph and any("supports_cuda_graph" in n for n in plan.notes)


def test_capture_keys_of_the_built_in_methods():
    """Only IAD's computation depends on the epoch: it switches introspection on once."""
    iad = get_method("iad")()
    assert [iad.capture_key(e) for e in (0, 59, 60, 199)] == [False, False, True, True]
    for name in METHODS:
        if name != "iad":
            m = tiny_setup(name)[0]
            assert m.capture_key(0) == m.capture_key(150), name


# ------------------------------------------------------------------ the learning rate


def test_device_tensor_lr_is_written_in_place_and_checkpointed_as_a_float():
    params = [torch.nn.Parameter(torch.ones(3))]
    _, captured = plans()
    opt = make_optimizer(params, TRAIN, captured)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32
    assert lr.item() == pytest.approx(0.1)
    set_lr(opt, 0.01)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.01)  # in place
    state = optimizer_state(opt)
    assert state["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert type(state["param_groups"][0]["lr"]) is float
    assert opt.param_groups[0]["lr"] is lr  # the live optimizer keeps its tensor

    again = make_optimizer(params, TRAIN, captured)
    again.load_state_dict(state)  # a float lr now
    set_optimizer_impl(again, captured)
    assert isinstance(again.param_groups[0]["lr"], torch.Tensor)
    assert again.param_groups[0]["lr"].item() == pytest.approx(0.01)
    eager = make_optimizer(params, TRAIN, plans()[0])
    eager.load_state_dict(state)
    set_optimizer_impl(eager, plans()[0])
    assert eager.param_groups[0]["lr"] == pytest.approx(0.01)
    assert type(eager.param_groups[0]["lr"]) is float


# ------------------------------------------------------------ replays = eager, all methods


@pytest.mark.parametrize("name", METHODS)
def test_replayed_steps_match_eager_steps(name):
    """Warm-up, capture, replays, the epoch's smaller last batch eagerly, then replays again,
    across a learning-rate change: the losses and weights of the eager steps."""
    eager, captured = plans()
    schedule = [(3, True)] * 5 + [(3, False), (4, True), (4, True)]
    lrs = {3: 0.1, 4: 0.02}
    a = run(name, captured, schedule, lrs=lrs)
    b = run(name, eager, schedule, lrs=lrs)
    assert_runs_agree(a, b)
    g = a[2].graph
    assert g is not None and g.off is None and captured.cuda_graph, captured.notes
    # 2 warm-up steps, the capture (which this backend runs), 2 + 2 replays, 1 eager tail
    assert (g.counts.warmup, g.counts.captures, g.counts.replays, g.counts.eager) == (2, 1, 4, 1)
    assert a[2].stats.read().examples == b[2].stats.read().examples


def test_iad_is_captured_again_when_introspection_starts():
    """IAD's capture_key flips at ``begin``: a second warm-up and capture, and the replays
    after it compute kl_intro (with the first graph they would not)."""
    import ardbench.train.check as check

    real = check.build_method
    eager, captured = plans()
    schedule = [(0, True)] * 4 + [(1, True)] * 4
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(check, "build_method", lambda name: real(name, {"begin": 1}))
        a = run("iad", captured, schedule)
        b = run("iad", eager, schedule)
    assert_runs_agree(a, b)
    assert "kl_intro" not in a[0][3] and "kl_intro" in a[0][-1]
    g = a[2].graph
    assert g.counts.keys == [(False, None), (True, None)] and g.counts.captures == 2
    assert g.counts.warmup == 2 * WARMUP and not g.per_epoch


class EpochScaled(Method):
    """Test-only: a Python number from ctx.epoch in the loss, and no capture_key."""

    class Config(MethodConfig):
        pass

    def losses(self, student, teacher, batch, ctx):
        return {"ce_nat": (1 + ctx.epoch) * F.cross_entropy(student(batch.x), batch.y)}


def test_a_method_reading_the_epoch_is_captured_every_epoch():
    eager, captured = plans()
    schedule = [(e, True) for e in (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)]
    with pytest.warns(RuntimeWarning, match="reads ctx.epoch"):
        a = run("natural", captured, schedule, method=EpochScaled())
    b = run("natural", eager, schedule, method=EpochScaled())
    assert_runs_agree(a, b)
    g = a[2].graph
    assert g.per_epoch and g.counts.captures == 3 and captured.cuda_graph
    assert [k[1] for k in g.counts.keys] == [0, 1, 2]
    assert any("captured again every epoch" in n for n in captured.notes)


class StepDependent(Method):
    class Config(MethodConfig):
        pass

    def losses(self, student, teacher, batch, ctx):
        scale = 0.5 if ctx.step % 2 else 1.0
        return {"ce_nat": scale * F.cross_entropy(student(batch.x), batch.y)}


class ReadsHost(Method):
    class Config(MethodConfig):
        pass

    def losses(self, student, teacher, batch, ctx):
        ce = F.cross_entropy(student(batch.x), batch.y)
        ctx.log("ce_value", float(ce.detach()))  # a host read: not capturable
        return {"ce_nat": ce}


@pytest.mark.parametrize(
    ("method", "reason"),
    [(StepDependent(), "reads ctx.step"), (ReadsHost(), "reads tensor values on the host")],
)
def test_uncapturable_steps_run_eagerly_and_say_why(method, reason):
    eager, captured = plans()
    schedule = [(0, True)] * 6
    with pytest.warns(RuntimeWarning, match="cuda_graph off"):
        a = run("natural", captured, schedule, method=method)
    b = run("natural", eager, schedule, method=type(method)())
    assert_runs_agree(a, b)
    g = a[2].graph
    assert g.off is not None and reason in g.off and not g.captured
    assert not captured.cuda_graph  # recorded as off ...
    assert any(reason in n and "runs eagerly" in n for n in captured.notes)  # ... with why
    assert g.counts.replays == 0


class FailingCapture(EagerReplay):
    """A backend whose capture raises, as CUDA does on an operation it cannot record."""

    def capture(self, fn):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def test_a_failed_capture_runs_the_step_eagerly():
    eager, captured = plans()
    schedule = [(0, True)] * 5
    with pytest.warns(RuntimeWarning, match="capture failed"):
        a = run("rslad", captured, schedule, backend=FailingCapture())
    b = run("rslad", eager, schedule)
    assert_runs_agree(a, b)  # the batch of the failed capture was trained once, eagerly
    g = a[2].graph
    assert "RuntimeError: operation not permitted" in g.off and "more detail" not in g.off
    assert a[2].stats.read().examples == 5 * 8


def test_a_replaced_learning_rate_tensor_means_a_new_capture():
    """The graph reads the lr tensor it was captured with: if the optimizer's is replaced
    (``load_state_dict``), the step warms up and captures again instead of using a stale one."""
    _, captured = plans()
    built, student, teacher, extras, batch = tiny_setup("pgd_at")
    runner = tiny_runner(built, "pgd_at", student, teacher, extras, captured, EagerReplay())
    runner.graph.warmup_steps = WARMUP
    for i in range(4):
        runner(batch, epoch=0, step=i)
    assert runner.graph.counts.captures == 1 and runner.graph.counts.replays == 1
    runner.optimizer.load_state_dict(optimizer_state(runner.optimizer))
    set_optimizer_impl(runner.optimizer, captured)
    for i in range(4, 8):
        runner(batch, epoch=0, step=i)
    assert runner.graph.counts.captures == 2 and runner.graph.counts.warmup == 2 * WARMUP


def test_watched_context_records_reads():
    ctx = graph_module.WatchedContext(
        epoch=3, total_epochs=5, step=7, attack=None, attack_fn=None, features=None
    )
    object.__setattr__(ctx, "reads", set())
    assert ctx.total_epochs == 5 and ctx.reads == set()
    assert ctx.epoch == 3 and ctx.reads == {"epoch"}
    assert ctx.step == 7 and ctx.reads == {"epoch", "step"}


# -------------------------------------------------------------------------- the trainer


def test_captured_trainer_run_schedule_checkpoint_and_resume(tiny_npz, tmp_path, monkeypatch):
    """The trainer with ``cuda_graph`` on (EagerReplay for CUDA): the learning-rate milestone
    is written into the captured tensor (one capture for the run, not one per lr), the
    checkpoint holds a float lr, and resuming gives the uninterrupted run's weights."""
    import ardbench.train.setup as setup

    real_resolve = setup.resolve_speed

    def graph_on(tc, device, method=None):
        plan = real_resolve(tc, device, method)
        plan.fused_optimizer = plan.cuda_graph = True
        return plan

    steps: list[CapturedStep] = []

    class Spy(CapturedStep):
        def __init__(self, step, backend=None, warmup=WARMUP):
            super().__init__(step, EagerReplay(), warmup=WARMUP)
            steps.append(self)

    monkeypatch.setattr(setup, "resolve_speed", graph_on)
    monkeypatch.setattr("ardbench.train.step.CapturedStep", Spy)
    sets = ("train.milestones=[1]", "train.lr_schedule=multistep", "train.probe=0")
    cfg = speed_cfg("pgd_at", tiny_npz, 3, *sets)  # 48 images, batch 16: 3 full batches
    full = train(cfg, runs_dir=tmp_path / "a", progress=False)
    assert full.record["hardware"]["speed"]["cuda_graph"] is True
    (g,) = steps
    assert g.counts.captures == 1 and g.counts.replays == 3 * 3 - WARMUP - 1
    rows = [r for r in (full.run_dir / "log.jsonl").read_text().splitlines()]
    assert '"lr": 0.1' in rows[0] and '"lr": 0.010' in rows[1]
    ckpt = torch.load(full.run_dir / "checkpoint.pt", weights_only=True)
    assert type(ckpt["optimizer"]["param_groups"][0]["lr"]) is float

    part = train(cfg, runs_dir=tmp_path / "b", progress=False, stop_after_epoch=2)
    done = resume(part.run_dir, progress=False)
    a = torch.load(full.run_dir / "model.pt", weights_only=True)
    b = torch.load(done.run_dir / "model.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k

    monkeypatch.setattr(setup, "resolve_speed", real_resolve)
    plain = train(
        speed_cfg("pgd_at", tiny_npz, 3, *sets, "train.fused_optimizer=true"),
        runs_dir=tmp_path / "c",
        progress=False,
    )
    c = torch.load(plain.run_dir / "model.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], c[k], rtol=1e-5, atol=1e-6, msg=k)


def test_check_reports_whether_a_method_can_be_captured(monkeypatch):
    from ardbench.methods import METHODS as REGISTRY
    from ardbench.train.check import run_contract_checks

    monkeypatch.setattr(REGISTRY, "_entries", dict(REGISTRY._entries))
    REGISTRY.register("step_dependent")(StepDependent)
    StepDependent.__doc__ = "Test-only (reads ctx.step)."
    (bad,) = [r for r in run_contract_checks("step_dependent") if "CUDA graph" in r.name]
    assert not bad.passed and "reads ctx.step" in bad.detail
    (good,) = [r for r in run_contract_checks("iad") if "CUDA graph" in r.name]
    assert good.passed and "2 capture(s)" in good.detail, good.detail
