"""Each speed feature gives the plain path's losses, gradients and weights (to float tolerance).

Tiny models on CPU (``contract.tiny_setup``: TinyNet student/teacher, batch 8 at 16x16), two
real trainer steps (``speed.TrainStep``, the path ``trainer.train`` runs) with a feature on and
off. The ``torch.compile`` tests are marked ``slow``: compiling even TinyNet takes 30-60 s on a
2-core CPU (inductor generates and builds C++), which is too slow for the quick suite but runs
in CI (``-m "not gpu"``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stepkit import (
    ATTACK,
    METHODS,
    TRAIN,
    assert_same,
    run_steps,
    speed_cfg,
    step_values,
    tiny_runner,
)

from ardbench.methods import Method, MethodConfig
from ardbench.protocols import SPEED_KEYS, TrainConfig
from ardbench.recipes import resolve_config
from ardbench.train.check import TinyNet, tiny_setup
from ardbench.train.speed import (
    SpeedPlan,
    compile_settings,
    make_optimizer,
    resolve_speed,
)
from ardbench.train.step import SharedForward, TrainStep, make_attack_fn
from ardbench.train.trainer import resume, train

# ------------------------------------------------------------------------ resolution


def test_auto_resolves_on_for_cuda_off_for_cpu():
    cpu = resolve_speed(TrainConfig(), "cpu")
    assert (cpu.channels_last, cpu.compile, cpu.fused_optimizer, cpu.cudnn_benchmark) == (
        False,
        False,
        False,
        False,
    )
    assert cpu.share_teacher and cpu.amp == "none"
    cuda = resolve_speed(TrainConfig(), "cuda")  # resolution only; no GPU needed
    assert cuda.channels_last and cuda.compile and cuda.fused_optimizer and cuda.cudnn_benchmark
    assert not resolve_speed(TrainConfig(deterministic=True), "cuda").cudnn_benchmark
    # TF32 is PyTorch's setting, not ardbench's: recorded as found (CUDA only)
    assert (cpu.conv_tf32, cpu.matmul_tf32) == (False, False)
    assert cuda.conv_tf32 == torch.backends.cudnn.allow_tf32
    assert cuda.matmul_tf32 == torch.backends.cuda.matmul.allow_tf32
    assert {"conv_tf32", "matmul_tf32"} <= set(cuda.to_dict())
    forced = resolve_speed(TrainConfig(channels_last=True, share_teacher=False), "cpu")
    assert forced.channels_last and not forced.share_teacher


def test_methods_opt_out_by_class_attribute():
    class NoCompile(Method):
        supports_compile = False
        share_teacher_outputs = False

    plan = resolve_speed(TrainConfig(compile=True), "cuda", NoCompile)
    assert not plan.compile and not plan.share_teacher
    assert any("supports_compile" in n for n in plan.notes)


def test_speed_flags_parse_and_reject():
    cfg = resolve_config(
        "pgd_at", cli={}, sets=["train.compile=false", "channels_last=true", "train.amp=bf16"]
    )
    assert cfg.train.compile is False and cfg.train.channels_last is True
    assert cfg.train.amp == "bf16" and cfg.train.fused_optimizer == "auto"
    assert set(SPEED_KEYS) <= set(cfg.to_dict()["train"])
    with pytest.raises(ValueError, match="auto, true or false"):
        resolve_config("pgd_at", cli={}, sets=["train.compile=sometimes"])
    with pytest.raises(ValueError, match="train.amp"):
        resolve_config("pgd_at", cli={}, sets=["train.amp=fp8"])


# ------------------------------------------------------------------ equivalence per feature


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_same_losses_grads_and_weights(method):
    plain = run_steps(method)
    nhwc = run_steps(method, channels_last=True)
    assert_same(plain, nhwc)
    # the networks really ran in NHWC
    conv = nhwc[2].student.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_channels_last_kdiga_random_smoothing_noise(monkeypatch):
    """KDIGA's ``rs`` variant draws uniform noise per pixel: in NCHW order also when the batch
    is channels_last (``zeros_like(x).uniform_()`` would fill in NHWC memory order)."""
    import ardbench.train.check as contract

    real = contract.build_method
    monkeypatch.setattr(contract, "build_method", lambda name: real(name, {"variant": "rs"}))
    plain = run_steps("kdiga")
    assert "kl_nat" in plain[0][0][0]  # the rs variant ran
    assert_same(plain, run_steps("kdiga", channels_last=True))


@pytest.mark.parametrize("method", METHODS)
def test_teacher_sharing_same_losses_grads_and_weights(method):
    """Includes KDIGA, whose input-gradient alignment needs a graph through the teacher."""
    assert_same(run_steps(method), run_steps(method, share_teacher=True))


@pytest.mark.parametrize("method", METHODS)
def test_fused_optimizer_same_weights(method):
    assert_same(run_steps(method), run_steps(method, fused_optimizer=True))


class TwiceTeacher(Method):
    """Test-only: calls the teacher twice on the clean batch (a KD term and an attack target)
    and once through features, the pattern teacher sharing removes."""

    class Config(MethodConfig):
        pass

    def losses(self, student, teacher, batch, ctx):
        x = batch.x
        t_logits, t_feats = ctx.features(teacher, x)  # a forward (stored with its logits)
        with torch.no_grad():
            t1 = teacher(x)  # shared

        def objective(xa):
            target = F.softmax(teacher(x), 1)  # shared, at every attack step
            return F.kl_div(F.log_softmax(student(xa), 1), target, reduction="sum")

        s = student(ctx.attack_fn(x, objective))
        kd = F.kl_div(F.log_softmax(s, 1), F.softmax(t1, 1), reduction="batchmean")
        return {"kl_adv": kd, "feat_norm": 1e-3 * t_feats.pow(2).mean() + 0 * t_logits.sum()}


def test_teacher_sharing_reuses_forwards_and_matches():
    plain = run_steps("kd", method=TwiceTeacher())
    shared = run_steps("kd", method=TwiceTeacher(), share_teacher=True)
    assert_same(plain, shared)
    teacher = shared[2].teacher
    assert isinstance(teacher, SharedForward)
    # per step: t1 and the attack's 2 objective calls reuse the features call's forward
    assert teacher.hits == 2 * 3
    assert plain[2].teacher is not None and not isinstance(plain[2].teacher, SharedForward)


def test_shared_forward_never_shares_graphs_or_modified_inputs():
    torch.manual_seed(0)
    net = TinyNet().eval().requires_grad_(False)
    shared = SharedForward(net)
    x = torch.rand(4, 3, 8, 8)
    a = shared(x)
    assert shared(x) is a and shared.hits == 1
    x.add_(0.1)  # in place: a new version, a new forward
    b = shared(x)
    assert b is not a and not torch.equal(a, b)
    xg = x.clone().requires_grad_(True)
    out1, out2 = shared(xg), shared(xg)  # need a graph to xg: never memoised
    assert out1 is not out2 and out1.grad_fn is not None
    (g,) = torch.autograd.grad(out1.sum(), xg)
    assert g.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert shared(x).dtype == torch.bfloat16  # other autocast state: not the fp32 entry
    shared.clear()
    assert shared(x) is not b  # a new step
    assert shared.conv is net.conv  # attributes of the wrapped network


def test_attacks_take_input_only_gradients():
    """Kept from the plain path: the PGD loop never writes weight gradients."""
    torch.manual_seed(0)
    net = TinyNet().train()
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    make_attack_fn(net, ATTACK)(x, lambda xa: F.cross_entropy(net(xa), y, reduction="sum"))
    assert all(p.grad is None for p in net.parameters())


def test_non_finite_term_and_gradient_are_flagged_on_the_device():
    """The step reads nothing on the host: a non-finite term (or gradient) raises a device flag
    with the step it first happened at; the trainer reads it once per epoch and stops."""

    class NaNMethod(Method):
        needs_teacher = False  # run with teacher=None below

        class Config(MethodConfig):
            pass

        def losses(self, student, teacher, batch, ctx):
            bad = ctx.step == 1
            ce = F.cross_entropy(student(batch.x), batch.y)
            return {"ce_nat": ce * float("nan") if bad else ce, "ok_term": 0.0 * ce}

    _, student, teacher, extras, batch = tiny_setup("natural")
    plan = SpeedPlan(device="cpu")
    runner = TrainStep(
        method=NaNMethod(),
        method_name="nan",
        student=student,
        teacher=None,
        extras={},
        optimizer=make_optimizer(list(student.parameters()), TRAIN, plan),
        attack_fn=make_attack_fn(student, ATTACK),
        attack_cfg=ATTACK,
        plan=plan,
        num_classes=10,
        total_epochs=1,
    )
    runner(batch, epoch=0, step=0)
    clean = runner.stats.read()
    assert not clean.bad_terms and not clean.bad_grads and clean.first_bad_step is None
    runner(batch, epoch=0, step=1)
    assert runner.stats.read().bad_terms == ["ce_nat"]
    runner(batch, epoch=0, step=2)  # the weights are NaN now: every term is
    summary = runner.stats.read()
    assert summary.bad_terms == ["ce_nat", "ok_term"] and summary.bad_grads
    assert summary.first_bad_step == 1 and summary.examples == 3 * len(batch.y)


# ------------------------------------------------------------------------ torch.compile


@pytest.mark.slow
def test_compile_same_losses_grads_and_weights():
    plain = run_steps("rslad")
    compiled = run_steps("rslad", compile=True)
    assert compiled[2].plan.compile  # stayed compiled
    assert compiled[2].student._compiled_call_impl is not None
    assert_same(plain, compiled, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compile_falls_back_to_eager_for_double_backward():
    """KDIGA's create_graph=True is unsupported under torch.compile: the first step is rolled
    back (BN statistics, RNG) and rerun eagerly, giving the eager result; the plan says so."""
    plain = run_steps("kdiga")
    with pytest.warns(RuntimeWarning, match="double backward"):
        fallback = run_steps("kdiga", compile=True)
    assert not fallback[2].plan.compile
    assert any("double backward" in n for n in fallback[2].plan.notes)
    assert_same(plain, fallback)


def test_compile_auto_says_when_torch_compile_built_nothing(monkeypatch):
    """Under ``compile: auto`` dynamo suppresses compile errors and runs the frames eagerly:
    the plan (hence the record) must then say compile was off, not claim it was on."""
    import torch._dynamo

    import ardbench.train.speed as speed

    def broken_backend(gm, example_inputs):
        raise RuntimeError("test backend: cannot compile this graph")

    real = speed.compile_module
    monkeypatch.setattr(speed, "compile_module", lambda m, **kw: real(m, backend=broken_backend))
    torch._dynamo.reset()
    built, student, teacher, extras, batch = tiny_setup("pgd_at")
    plan = SpeedPlan(device="cpu", compile=True, share_teacher=False)
    runner = tiny_runner(built, "pgd_at", student, teacher, extras, plan)
    try:
        with compile_settings(plan, "auto"), pytest.warns(RuntimeWarning, match="compile off"):
            values = step_values(runner, batch, epoch=0, step=0)
    finally:
        torch._dynamo.reset()
    assert not plan.compile and any("could build none" in n for n in plan.notes)
    assert np.isfinite(values["loss"])


@pytest.mark.slow
def test_compiled_run_in_the_trainer(tiny_npz, tmp_path):
    """The whole trainer path compiled: recorded as such, evaluated eagerly afterwards."""
    res = train(speed_cfg("pgd_at", tiny_npz, 1, "train.compile=true"), runs_dir=tmp_path)
    assert res.completed and res.record["hardware"]["speed"]["compile"] is True
    assert set(res.record["eval"]["accuracy"]) == {"clean", "pgd20"}


# ------------------------------------------------------------ in the trainer: records, bf16


def test_deterministic_is_on_during_training_and_restored_after(tiny_npz, tmp_path, monkeypatch):
    import ardbench.train.step as step_module

    seen = []
    real_run = step_module.TrainStep._run

    def spy(self, *a, **k):
        seen.append(
            (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
        )
        return real_run(self, *a, **k)

    monkeypatch.setattr(step_module.TrainStep, "_run", spy)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    res = train(speed_cfg("pgd_at", tiny_npz, 1, "train.deterministic=true"), runs_dir=tmp_path)
    assert res.completed and seen and all(s == (True, True) for s in seen)
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
    ) == before


def test_resolved_flags_in_log_and_record_config_keeps_auto(tiny_npz, tmp_path):
    res = train(speed_cfg("pgd_at", tiny_npz, 1), runs_dir=tmp_path, progress=False)
    speed = res.record["hardware"]["speed"]
    assert speed["channels_last"] is False and speed["compile"] is False  # auto on CPU
    assert speed["share_teacher"] is True and speed["amp"] == "none"
    row = json.loads((res.run_dir / "log.jsonl").read_text().splitlines()[0])
    assert row["speed"] == speed
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["train"]["channels_last"] == "auto" and cfg["train"]["amp"] == "none"


def test_channels_last_and_fused_in_the_trainer_same_model_and_resume(tiny_npz, tmp_path):
    """Whole runs agree to float tolerance with pgd_at. (With TRADES they drift apart: its
    attack starts 0.001 from x, where the KL gradient is so small that its sign, and so x',
    follows float rounding; any change of summation order does that, cuDNN's run-to-run
    nondeterminism included. The per-step tests above pin the equivalence down.)"""
    on = ("train.channels_last=true", "train.fused_optimizer=true")
    plain = train(speed_cfg("pgd_at", tiny_npz, 2), runs_dir=tmp_path / "a", progress=False)
    fast = train(speed_cfg("pgd_at", tiny_npz, 2, *on), runs_dir=tmp_path / "b", progress=False)
    part = train(
        speed_cfg("pgd_at", tiny_npz, 2, *on),
        runs_dir=tmp_path / "c",
        progress=False,
        stop_after_epoch=1,
    )
    done = resume(part.run_dir, progress=False)
    a, b, c = (torch.load(r.run_dir / "model.pt", weights_only=True) for r in (plain, fast, done))
    for k in a:
        assert b[k].is_contiguous(), k  # saved files do not depend on the memory format
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-3, msg=k)
        assert torch.equal(b[k], c[k]), k  # resume: the same weights as uninterrupted
    assert fast.record["hardware"]["speed"]["channels_last"] is True
    assert fast.record["hardware"]["speed"]["fused_optimizer"] is True


def test_bf16_runs_is_recorded_and_evaluation_stays_fp32(tiny_npz, tmp_path, monkeypatch):
    import ardbench.eval.core as ev

    seen = {}
    real = ev.evaluate_model

    def spy(model, x, y, **kw):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtypes"] = {p.dtype for p in model.parameters()}
        seen["x"] = x.dtype
        result = real(model, x, y, **kw)
        with torch.no_grad():
            seen["logits"] = model(x[:2]).dtype
        return result

    monkeypatch.setattr(ev, "evaluate_model", spy)
    res = train(speed_cfg("pgd_at", tiny_npz, 1, "train.amp=bf16"), runs_dir=tmp_path)
    assert res.completed and res.record["hardware"]["speed"]["amp"] == "bf16"
    assert res.record["config"]["train"]["amp"] == "bf16"
    assert seen == {
        "autocast": False,
        "dtypes": {torch.float32},
        "x": torch.float32,
        "logits": torch.float32,
    }
    losses = json.loads((res.run_dir / "log.jsonl").read_text().splitlines()[0])["losses"]
    assert np.isfinite(losses["ce_adv"])


def test_bf16_autocast_covers_the_training_step():
    seen = []

    class Probe(Method):
        class Config(MethodConfig):
            pass

        def losses(self, student, teacher, batch, ctx):
            logits = student(batch.x)
            seen.append(logits.dtype)
            return {"ce_nat": F.cross_entropy(logits.float(), batch.y)}

    run_steps("natural", method=Probe(), steps=1, amp="bf16")
    assert seen == [torch.bfloat16]
