"""The CUDA code paths: speed features, device placement, the trainer and the evaluator on a GPU.

Every test here is marked ``gpu`` (CI runs ``-m "not gpu"``). What is covered:

1. Each registered method, two real ``speed.TrainStep`` steps on the device with the speed
   features as ``resolve_speed`` resolves ``auto`` there (channels_last, fused SGD, cuDNN
   autotuning, teacher sharing; on CUDA all on) against the plain path (everything off) on the
   same device from the same weights, batch and seed: losses, gradients and weight changes agree.
   ``torch.compile`` (also ``auto``-on for CUDA) is checked for rslad, trades and kdiga only,
   to keep the file fast; KDIGA needs a double backward and falls back to eager with a
   RuntimeWarning (``TrainStep``'s rollback, including the CUDA RNG state).
2. The plain path on the device against the plain path on the CPU (rslad, trades).
3. ``data.DeviceLoader`` on the device: placement, shapes, dtypes, permutations, crop + flip, and
   the same batches as on the CPU for the same seed.
4. ``trainer.train`` end to end on the device (record's ``hardware.speed`` = what ``auto``
   resolved to, accuracies in [0, 1]); a bf16 run whose evaluation stays fp32.
5. ``evaluate.evaluate_model`` on the device against the CPU (clean, FGSM, PGD-20, CW).
6. The shared ``resnet4b`` ``torch.export`` archive moved to the device gives the CPU's logits
   (skipped without ``../shared/data``).
7. The whole step captured as a CUDA graph (``train.cuda_graph``; ``ardbench/train/graph.py``)
   against the same steps run eagerly, every method: warm-up, capture, replays, the smaller
   last batch eagerly and a replay after it; and with torch.compile (rslad, trades). On the
   CPU (``ARDBENCH_TEST_DEVICE=cpu``) ``EagerReplay`` stands in for CUDA graphs, which checks
   the orchestration only; ``tests/test_train_graph.py`` covers it further.
8. The run's first capture checks itself against an eager step (``train/graph_check.py``):
   it passes on the GPU (rslad, trades, mtard, kdiga), a planted wrong update falls back with
   one warning, and a failed capture leaves the current stream and the generator usable
   (``train/capture_safety.py``; torch <= 2.12 kept the generator in capture mode).

Tolerances. Training on CUDA runs cuDNN convolutions in TF32 (PyTorch's default for cuDNN:
operands rounded to a 10-bit mantissa, accumulation in fp32), and the two sides of a comparison
run different kernels (NHWC vs NCHW, autotuned and nondeterministic cuDNN algorithms, inductor's
generated code; the CPU in test 2), so they agree to TF32 precision, not bitwise. Gradients and
each weight's change over the two steps are compared by relative norm error
``||a - b|| / ||b||``, not elementwise (near-zero entries): below 2e-2, except convolution
weights, below 1.5e-1. A convolution followed by BatchNorm has a weight gradient that is a small
difference of large terms (BN removes the components along the batch statistics), so its TF32
error is relative to those terms: emulating TF32 on the CPU (operands of every convolution,
forward and backward, rounded to 10 bits) gave up to 5.4e-2 on TinyNet's conv weight gradient
(ARD, IAD) and at most 4.5e-3 on any other parameter, and at most 1/10 of the loss tolerance:
losses to rtol 1e-2 / atol 1e-4. The final weights are not compared directly: two steps move
them by 1e-4 to 1e-2 of their size, which a tolerance on the weights would not see. The attacks
take the sign of input gradients, so rounding can flip a few pixels of x_adv; the emulation
includes that. The evaluator runs fp32 with TF32 off, but CUDA and CPU kernels still sum in
other orders, which can flip a borderline point under attack: attacked accuracies may differ by
a few points of 64; clean accuracy (points chosen with a clear top-2 margin) may not differ.

How to run: ``nox -s gpu``, or ``python -m pytest -m gpu tests/test_train_cuda.py`` on a CUDA
machine (the whole file takes a few minutes at most on an H100, torch.compile included).
Without a GPU the module is skipped. ``ARDBENCH_TEST_DEVICE=cpu python -m pytest -m gpu tests/test_train_cuda.py``
runs the same tests on the CPU to check their logic (there ``auto`` resolves the features off,
so the features that exist on the CPU are forced on; cuDNN/TF32-only checks are skipped).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import stepkit
import torch
import torch.nn.functional as F
from torch import nn

from ardbench import attacks
from ardbench.data import DeviceLoader, to_float01
from ardbench.eval import evaluate_model
from ardbench.methods import Batch, get_method
from ardbench.models import build_arch, load_model
from ardbench.train.check import tiny_setup
from ardbench.train.graph import WARMUP_STEPS, EagerReplay
from ardbench.train.speed import (
    SpeedPlan,
    compile_settings,
    cudnn_settings,
    resolve_speed,
)
from ardbench.train.step import TrainStep
from ardbench.train.trainer import train

DEVICE = os.environ.get("ARDBENCH_TEST_DEVICE", "cuda")
IS_CUDA = DEVICE.startswith("cuda")
DEV = torch.device(DEVICE)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        IS_CUDA and not torch.cuda.is_available(),
        reason=f"needs CUDA (ARDBENCH_TEST_DEVICE={DEVICE!r}, torch.cuda.is_available() is "
        "False); set ARDBENCH_TEST_DEVICE=cpu to check the tests' logic on the CPU",
    ),
]

# helpers shared with the CPU speed tests (tests/stepkit.py: importable as ``stepkit`` because
# tests/ has no __init__.py and pytest's default "prepend" import mode puts it on sys.path)
METHODS = stepkit.METHODS
TRAIN = stepkit.TRAIN  # lr 0.1, momentum 0.9, wd 5e-4; speed flags "auto"
ATTACK = stepkit.ATTACK  # eps 8/255, step 2/255, 2 steps, uniform start
COMPILED_METHODS = ("rslad", "trades", "kdiga")

LOSS_RTOL, LOSS_ATOL = 1e-2, 1e-4  # TF32 convolutions, different kernels on the two sides
GRAD_REL = 2e-2  # relative norm error: each gradient, each weight's change over the steps
CONV_REL = 1.5e-1  # the same for convolution weights (TF32 inputs, BatchNorm after: see top)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET4B = SHARED_DATA / "models" / "resnet4b_cifar10_linf2.pt2"
CIFAR10_TEST = SHARED_DATA / "cifar10" / "cifar10_exact_test.npz"


# ------------------------------------------------------------------------------ helpers


class Run(NamedTuple):
    steps: list  # per step: (loss values, {parameter name: gradient on the CPU})
    init: dict  # the student's state before the first step (CPU copies)
    final: dict  # and after the last
    runner: TrainStep
    conv_weights: frozenset  # names of the student's convolution weights


def run_steps_on(
    device, method_name: str, plan: SpeedPlan, *, steps: int = 2, half_at: tuple[int, ...] = ()
) -> Run:
    """``steps`` TrainSteps of the tiny contract setup on ``device`` (the steps in ``half_at``
    on half a batch: the epoch's smaller last batch).

    The networks, the method and the batch are built on the CPU (``tiny_setup``, seeded: the
    same initial weights whatever the device), then moved. With ``plan.cuda_graph`` the step
    is captured after its warm-up (on the CPU: ``EagerReplay`` stands in for CUDA graphs).
    """
    dev = torch.device(device)
    built, student, teacher, extras, batch = tiny_setup(method_name)
    init = {n: t.detach().clone() for n, t in student.state_dict().items()}
    convs = frozenset(f"{n}.weight" for n, m in student.named_modules() if isinstance(m, nn.Conv2d))
    for module in (student, teacher, built, *extras.values()):
        module.to(dev)
    batch = Batch(x=batch.x.to(dev), y=batch.y.to(dev), index=batch.index.to(dev))
    backend = None if IS_CUDA else EagerReplay()
    runner = stepkit.tiny_runner(built, method_name, student, teacher, extras, plan, backend)
    named = [
        *student.named_parameters(),
        *(("method." + n, p) for n, p in built.named_parameters()),
    ]
    torch.manual_seed(1234)  # the attacks' random starts (every device's generator)
    out = []
    benchmark_before = torch.backends.cudnn.benchmark
    with cudnn_settings(plan), compile_settings(plan, plan.compile):
        if dev.type == "cuda":
            assert torch.backends.cudnn.benchmark is plan.cudnn_benchmark
        for i in range(steps):
            b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index)
            if i in half_at:
                n = len(b.y) // 2
                b = Batch(x=b.x[:n], y=b.y[:n], index=b.index[:n])
            values = stepkit.step_values(runner, b, epoch=199, step=i)
            grads = {n: p.grad.detach().cpu().clone() for n, p in named if p.grad is not None}
            out.append((values, grads))
    assert torch.backends.cudnn.benchmark is benchmark_before  # restored
    final = {n: t.detach().cpu().clone() for n, t in student.state_dict().items()}
    return Run(out, init, final, runner, convs)


def assert_rel_close(
    a: torch.Tensor, b: torch.Tensor, what: str, tol: float, floor: float = 0.0
) -> None:
    """``||a - b|| <= tol * ||b||`` (+ ``floor``, for references at rounding level)."""
    err = float((a.double() - b.double()).norm())
    ref = float(b.double().norm())
    assert err <= tol * ref + floor + 1e-12, (
        f"{what}: relative norm error {err / max(ref, 1e-30):.2e} (norm {ref:.2e})"
    )


def assert_close_runs(a: Run, b: Run, what: str) -> None:
    """Losses to rtol/atol; gradients, and each weight's change over the steps, by relative
    norm error. (The change, not the final weights: two steps move the weights by 1e-4 to 1e-2
    of their size, which a tolerance on the weights themselves would not see.)"""
    for k in b.init:
        assert torch.equal(a.init[k], b.init[k]), f"{what}: initial {k}"  # same start
    for i, ((va, ga), (vb, gb)) in enumerate(zip(a.steps, b.steps, strict=True)):
        assert va.keys() == vb.keys(), what
        for k in vb:
            assert math.isfinite(va[k]), f"{what}: step {i} {k} = {va[k]}"
            assert va[k] == pytest.approx(vb[k], rel=LOSS_RTOL, abs=LOSS_ATOL), (
                f"{what}: step {i} loss {k}: {va[k]} vs {vb[k]}"
            )
        assert ga.keys() == gb.keys() and gb, what
        for k in gb:
            tol = CONV_REL if k in b.conv_weights else GRAD_REL
            assert_rel_close(ga[k], gb[k], f"{what}: step {i} grad {k}", tol)
    assert a.final.keys() == b.final.keys()
    for k, w0 in b.init.items():
        if not w0.is_floating_point():  # BN's num_batches_tracked
            assert torch.equal(a.final[k], b.final[k]), f"{what}: {k}"
            continue
        # floor: fp32 rounding of the weights themselves
        floor = 1e-6 * float(w0.double().norm())
        tol = CONV_REL if k in b.conv_weights else GRAD_REL
        assert_rel_close(a.final[k] - w0, b.final[k] - w0, f"{what}: change of {k}", tol, floor)


def plain_plan() -> SpeedPlan:
    return SpeedPlan(device=str(DEV), share_teacher=False)  # every feature off


def fast_plan(*, compile: bool) -> SpeedPlan:
    """What ``auto`` resolves to on the device (``compile`` as asked). No method is passed, as
    for a method that does not opt out: KDIGA then exercises TrainStep's eager fallback.

    On the CPU ``auto`` resolves every feature off, which would make the comparison vacuous:
    there the features that exist on the CPU (channels_last, fused SGD, compile) are forced on.
    """
    if IS_CUDA:
        tc = dataclasses.replace(TRAIN, compile="auto" if compile else False, cuda_graph=False)
    else:
        tc = dataclasses.replace(TRAIN, channels_last=True, fused_optimizer=True, compile=compile)
    plan = resolve_speed(tc, DEV)
    assert not plan.cuda_graph  # whole-step capture: its own tests (section 7)
    assert plan.channels_last and plan.fused_optimizer and plan.share_teacher
    assert plan.compile is compile and plan.amp == "none"
    assert plan.cudnn_benchmark is IS_CUDA  # cuDNN autotuning: CUDA only
    return plan


@pytest.fixture
def cpu_drawn_starts(monkeypatch):
    """The attacks' random starts drawn from the CPU generator, then moved to the device: CUDA's
    generator draws other numbers for the same seed, which would hide the comparison."""
    real = attacks.random_start

    def on_cpu(x, eps, kind, norm="Linf", generator=None):
        return real(x.detach().cpu(), eps, kind, norm, generator).to(x.device)

    monkeypatch.setattr(attacks, "random_start", on_cpu)


@pytest.fixture
def fresh_dynamo():
    """Forget graphs compiled by earlier tests (each module instance adds cache entries to the
    same code objects, and dynamo's recompile limit is per code object)."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ------------------------------------------------------- 1. speed features vs plain path


@pytest.mark.parametrize("method", METHODS)
def test_speed_features_match_plain_path_on_device(method):
    """channels_last + fused SGD + cuDNN autotuning + teacher sharing (compile: below)."""
    plain = run_steps_on(DEV, method, plain_plan())
    fast = run_steps_on(DEV, method, fast_plan(compile=False))
    assert_close_runs(fast, plain, method)
    runner = fast.runner
    conv = runner.student.conv.weight
    assert conv.device.type == DEV.type
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(g.get("fused") for g in runner.optimizer.param_groups)
    assert not any(g.get("fused") for g in plain.runner.optimizer.param_groups)


@pytest.mark.parametrize("method", COMPILED_METHODS)
def test_compiled_step_matches_plain_path_on_device(method, fresh_dynamo):
    """Every ``auto`` feature, torch.compile included. KDIGA's double backward is not supported
    by torch.compile: the first step is rolled back and rerun eagerly, with a RuntimeWarning
    (the trainer itself never tries: KDIGA opts out with ``supports_compile = False``)."""
    plain = run_steps_on(DEV, method, plain_plan())
    if method == "kdiga":
        assert not resolve_speed(TRAIN, DEV, get_method("kdiga")).compile  # the opt-out
        with pytest.warns(RuntimeWarning, match="double backward"):
            fast = run_steps_on(DEV, method, fast_plan(compile=True))
        assert not fast.runner.plan.compile
        assert any("double backward" in n for n in fast.runner.plan.notes)
        assert fast.runner.student._compiled_call_impl is None  # back to eager
    else:
        fast = run_steps_on(DEV, method, fast_plan(compile=True))
        assert fast.runner.plan.compile, fast.runner.plan.notes  # stayed compiled
        assert fast.runner.student._compiled_call_impl is not None
    assert_close_runs(fast, plain, f"{method} compiled")


# --------------------------------------------------------- 2. plain path: device vs CPU


@pytest.mark.parametrize("method", ("rslad", "trades"))
def test_plain_path_on_device_matches_cpu(method, cpu_drawn_starts):
    on_cpu = run_steps_on("cpu", method, SpeedPlan(device="cpu", share_teacher=False))
    on_dev = run_steps_on(DEV, method, plain_plan())
    assert on_dev.runner.student.conv.weight.device.type == DEV.type
    assert_close_runs(on_dev, on_cpu, f"{method} {DEVICE} vs cpu")


# ------------------------------------------------------------------- 3. DeviceLoader


def test_device_loader_on_device():
    """What ``DeviceLoader`` guarantees: the batches of epoch e depend only on (seed, e) (its
    permutation, crop offsets and flips are drawn by a seeded CPU generator, whatever the
    device), each epoch visits every example once, and augmentation is a pad-4 zero-fill crop
    then a horizontal flip. Pixel values are x / 255 computed on the device, so against the
    CPU they are compared to float rounding (CUDA may divide by multiplying by 1/255)."""
    n, bs = 50, 16
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    loader = DeviceLoader(x, y, batch_size=bs, seed=3, augment=True, device=DEV)
    assert loader.x.device.type == DEV.type and loader.y.device.type == DEV.type
    assert len(loader) == math.ceil(n / bs)

    orders = []
    for epoch in (0, 1):
        order, offsets, flips = loader.epoch_order(epoch)
        assert order.device.type == "cpu"  # drawn on the CPU: the same on every device
        batches = list(loader.epoch_batches(epoch))
        assert [len(b.y) for b in batches] == [16, 16, 16, 2]
        for i, b in enumerate(batches):
            for t, dtype in ((b.x, torch.float32), (b.y, torch.int64), (b.index, torch.int64)):
                assert t.device.type == DEV.type and t.dtype == dtype
            assert b.x.shape == (len(b.y), 3, 32, 32) and b.x.is_contiguous()
            assert 0 <= float(b.x.min()) and float(b.x.max()) <= 1
            assert torch.equal(b.y.cpu(), y[b.index.cpu()])
            # crop + flip, checked image by image against the definition
            sl = slice(i * bs, (i + 1) * bs)
            assert torch.equal(b.index.cpu(), order[sl])
            padded = F.pad(x[order[sl]].float() / 255, (4, 4, 4, 4))
            for j in range(len(b.y)):
                top, left = (int(v) for v in offsets[sl][j])
                want = padded[j, :, top : top + 32, left : left + 32]
                if flips[sl][j]:
                    want = want.flip(-1)
                torch.testing.assert_close(b.x[j].cpu(), want, rtol=0, atol=1e-6)
        idx = torch.cat([b.index.cpu() for b in batches])
        assert torch.equal(idx.sort().values, torch.arange(n))  # a permutation of the dataset
        orders.append(idx)
        assert flips.any() and not flips.all()  # both kinds present: augmentation is real
        assert (offsets != 4).any()
    assert not torch.equal(orders[0], orders[1])  # a new order each epoch
    again = torch.cat([b.index.cpu() for b in loader.epoch_batches(0)])
    assert torch.equal(again, orders[0])  # and the same one for the same (seed, epoch)

    # the same seed on the CPU: the same indices and augmentation (pixels to float rounding)
    on_cpu = DeviceLoader(x, y, batch_size=bs, seed=3, augment=True, device="cpu")
    for bd, bc in zip(loader.epoch_batches(1), on_cpu.epoch_batches(1), strict=True):
        assert torch.equal(bd.index.cpu(), bc.index) and torch.equal(bd.y.cpu(), bc.y)
        torch.testing.assert_close(bd.x.cpu(), bc.x, rtol=0, atol=1e-6)

    # without augmentation: the images themselves, in the same order
    plain = DeviceLoader(x, y, batch_size=bs, seed=3, augment=False, device=DEV)
    for bp, ba in zip(plain.epoch_batches(0), loader.epoch_batches(0), strict=True):
        assert torch.equal(bp.index, ba.index)
        torch.testing.assert_close(bp.x.cpu(), to_float01(x[bp.index.cpu()]), rtol=0, atol=1e-6)
        assert not torch.equal(bp.x, ba.x)


# -------------------------------------------------------------------- 4. the trainer


def test_trainer_end_to_end_on_device(tiny_npz, tmp_path):
    """RSLAD from a fresh small_cnn teacher: teacher loading, sharing and (on CUDA) compiling
    of the frozen network on the device, then the eager fp32 evaluation."""
    from torch._dynamo.utils import counters

    cfg = stepkit.speed_cfg("rslad", tiny_npz, 1, f"device={DEVICE}", "teacher=small_cnn")
    expected = resolve_speed(cfg.train, DEV, get_method("rslad")).to_dict()
    assert expected["channels_last"] is IS_CUDA and expected["compile"] is IS_CUDA
    assert expected["fused_optimizer"] is IS_CUDA and expected["cudnn_benchmark"] is IS_CUDA
    graphs_before = counters["stats"]["unique_graphs"]
    benchmark_before = torch.backends.cudnn.benchmark
    res = train(cfg, runs_dir=tmp_path, progress=False)
    assert res.completed
    record = res.record
    assert record["hardware"]["speed"] == expected
    assert record["hardware"]["device"] == str(DEV)
    if IS_CUDA:
        assert record["hardware"]["gpu"] == torch.cuda.get_device_name(DEV)
        # compile "auto" suppresses dynamo errors (eager fallback): graphs must really be built
        assert counters["stats"]["unique_graphs"] > graphs_before
    assert torch.backends.cudnn.benchmark is benchmark_before  # restored after training
    acc = record["eval"]["accuracy"]
    assert set(acc) == {"clean", "pgd20"}
    assert all(0.0 <= v <= 1.0 for v in acc.values()), acc
    row = json.loads((res.run_dir / "log.jsonl").read_text().splitlines()[0])
    assert row["speed"] == expected
    assert all(math.isfinite(v) for v in row["losses"].values()), row["losses"]
    # saved as NCHW CPU tensors whatever trained them: a plain torch.load works without a GPU
    # and the checkpoint's sha256 does not depend on the device
    saved = torch.load(res.run_dir / "model.pt", weights_only=True)
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in saved.values())
    ckpt = torch.load(res.run_dir / "checkpoint.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["student"].values())
    reloaded = load_model(f"run:{res.run_dir}", runs_dir=tmp_path, device=DEV)
    assert next(reloaded.module.parameters()).device.type == DEV.type


def test_bf16_run_on_device_evaluates_in_fp32(tiny_npz, tmp_path, monkeypatch):
    import ardbench.eval.core as ev

    seen: dict = {"forwards": set()}
    real = ev.evaluate_model

    def in_forward(module, args):
        tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        seen["forwards"].add((torch.is_autocast_enabled(DEV.type), args[0].dtype, tf32))

    def spy(model, x, y, **kw):
        seen["autocast"] = torch.is_autocast_enabled(DEV.type)
        seen["dtypes"] = {p.dtype for p in model.parameters()}
        seen["x"] = (x.dtype, x.device.type)
        handle = model.register_forward_pre_hook(in_forward)
        try:
            result = real(model, x, y, **kw)
        finally:
            handle.remove()
        with torch.no_grad():
            seen["logits"] = model(x[:2]).dtype
        return result

    monkeypatch.setattr(ev, "evaluate_model", spy)
    cfg = stepkit.speed_cfg("pgd_at", tiny_npz, 1, f"device={DEVICE}", "train.amp=bf16")
    res = train(cfg, runs_dir=tmp_path, progress=False)
    assert res.completed and res.record["hardware"]["speed"]["amp"] == "bf16"
    assert res.record["hardware"]["speed"]["compile"] is IS_CUDA  # bf16 with compile on CUDA
    assert res.record["config"]["train"]["amp"] == "bf16"
    assert seen["autocast"] is False and seen["dtypes"] == {torch.float32}
    assert seen["x"] == (torch.float32, DEV.type) and seen["logits"] == torch.float32
    # every forward of the evaluation: no autocast, fp32 inputs and, on CUDA, TF32 off
    assert seen["forwards"] and all(
        a is False and d == torch.float32 for a, d, _ in seen["forwards"]
    )
    if IS_CUDA:
        assert {t for *_, t in seen["forwards"]} == {(False, False)}, seen["forwards"]
    losses = json.loads((res.run_dir / "log.jsonl").read_text().splitlines()[0])["losses"]
    assert np.isfinite(losses["ce_adv"])
    assert all(0.0 <= v <= 1.0 for v in res.record["eval"]["accuracy"].values())


# ------------------------------------------------------------------- 5. the evaluator


def _eval_setup():
    """A random-weight small_cnn with BatchNorm statistics calibrated on the points (without
    that its eval-mode logits are nearly input-independent: one class everywhere), and 64
    points whose top-2 logit margin is far above float error, so clean predictions cannot flip
    between devices. Labels: the model's prediction for 3 points in 4, another class for the
    4th (clean accuracy 0.75)."""
    torch.manual_seed(0)
    model = build_arch("small_cnn")
    x = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, 1).values
    keep = (top2[:, 0] - top2[:, 1]) > 0.05 * logits.std()
    x, pred = x[keep][:64], logits.argmax(1)[keep][:64]
    assert len(x) == 64
    y = pred.clone()
    y[::4] = (pred[::4] + 1) % 10
    return model, x, y


def test_evaluate_model_on_device_matches_cpu():
    model, x, y = _eval_setup()
    kw = dict(attacks="clean,fgsm,pgd20,cw", eps=1 / 255, seed=0)  # eps: attacks flip ~half
    r_cpu = evaluate_model(copy.deepcopy(model), x, y, device="cpu", **kw)
    dev_model = copy.deepcopy(model)
    r_dev = evaluate_model(dev_model, x.to(DEV), y.to(DEV), device=DEV, **kw)
    assert next(dev_model.parameters()).device.type == DEV.type
    assert not any(m.training for m in dev_model.modules())
    assert all(v["passed"] for v in r_dev.compliance.values()), r_dev.compliance
    assert r_dev.accuracy.keys() == r_cpu.accuracy.keys() == {"clean", "fgsm", "pgd20", "cw"}
    assert r_dev.accuracy["clean"] == r_cpu.accuracy["clean"] == 0.75
    assert r_dev.per_class["clean"] == r_cpu.per_class["clean"]
    # the random starts are the same on both (drawn on the CPU from the seed and the points'
    # indices), but CUDA and CPU kernels sum in other orders: a borderline point may flip
    for col in ("fgsm", "pgd20", "cw"):
        assert abs(r_dev.accuracy[col] - r_cpu.accuracy[col]) <= 4 / 64, (
            col,
            r_dev.accuracy,
            r_cpu.accuracy,
        )
        assert 0.0 <= r_dev.accuracy[col] <= r_dev.accuracy["clean"]
    assert r_cpu.accuracy["pgd20"] < 0.75  # the attacks do bite: the comparison means something


# ------------------------------------------------------- 6. a torch.export archive


@pytest.mark.realdata
def test_pt2_archive_on_device_matches_cpu():
    if not (RESNET4B.is_file() and CIFAR10_TEST.is_file()):
        pytest.skip(f"{RESNET4B.name} or {CIFAR10_TEST.name} not found under {SHARED_DATA}")
    data = np.load(CIFAR10_TEST)
    x = torch.from_numpy(data["x_test"][:64]).permute(0, 3, 1, 2).float().div(255).contiguous()
    on_cpu = load_model(str(RESNET4B))
    on_dev = load_model(str(RESNET4B), device=DEV)  # move_to_device_pass: graph constants too
    with torch.no_grad():
        ref = on_cpu.module(x)
        out = on_dev.module(x.to(DEV))
    assert out.device.type == DEV.type and out.dtype == torch.float32
    out = out.cpu()
    scale = float(ref.abs().max())
    # TF32 convolutions on CUDA: emulated on the CPU, 2.8e-4 relative, 3.4e-4 of the scale
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 5e-3, rel
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=5e-3 * scale)
    top2 = ref.topk(2, 1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05 * scale
    assert torch.equal(out.argmax(1)[clear], ref.argmax(1)[clear])
    # input gradients through the moved graph (what attacks and KDIGA need)
    xg = x[:8].to(DEV).requires_grad_(True)
    (grad,) = torch.autograd.grad(on_dev.module(xg).logsumexp(1).sum(), xg)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------- 7. the whole step as a CUDA graph

GRAPH_STEPS, GRAPH_HALF = WARMUP_STEPS + 5, (WARMUP_STEPS + 3,)


def graph_plan(*, on: bool, compile: bool = False) -> SpeedPlan:
    """The ``auto`` features of the device (``fast_plan``) with whole-step capture on or off.
    On CUDA ``auto`` resolves it on; on the CPU it is forced (EagerReplay then)."""
    plan = fast_plan(compile=compile)
    if IS_CUDA:
        assert resolve_speed(TRAIN, DEV).cuda_graph  # what auto gives on CUDA
    plan.cuda_graph = on
    return plan


def check_captured(run: Run, method: str) -> None:
    """It was captured once and replayed (not fallen back), around an eager smaller batch."""
    g = run.runner.graph
    plan = run.runner.plan
    if not get_method(method).supports_cuda_graph:  # a method may opt out, with a reason
        pytest.fail(f"{method} opts out of cuda_graph: test its opt-out here instead")
    assert g is not None and g.off is None and plan.cuda_graph, plan.notes
    assert g.counts.warmup == WARMUP_STEPS and g.counts.captures == 1, g.counts
    assert g.counts.eager == len(GRAPH_HALF)
    # CUDA: the capture's batch is trained by the first replay; EagerReplay runs it at capture
    replays = GRAPH_STEPS - WARMUP_STEPS - len(GRAPH_HALF) - (0 if IS_CUDA else 1)
    assert g.counts.replays == replays, g.counts


@pytest.mark.parametrize("method", METHODS)
def test_captured_step_matches_eager_step_on_device(method):
    """Warm-up (3 eager steps on a side stream), capture, replays, the epoch's smaller last
    batch eagerly, a replay after it: losses, gradients and weight changes of every step
    against the same steps run eagerly, same features, same seed. The attacks' random starts
    come from the CUDA generator on both sides (graph-safe: each replay advances its offset
    as the eager step does), so they are the same numbers."""
    eager = run_steps_on(DEV, method, graph_plan(on=False), steps=GRAPH_STEPS, half_at=GRAPH_HALF)
    captured = run_steps_on(DEV, method, graph_plan(on=True), steps=GRAPH_STEPS, half_at=GRAPH_HALF)
    check_captured(captured, method)
    assert eager.runner.graph is None
    assert_close_runs(captured, eager, f"{method} captured")


@pytest.mark.parametrize("method", ("rslad", "trades"))
def test_captured_compiled_step_matches_plain_path_on_device(method, fresh_dynamo):
    """What ``auto`` gives on CUDA: torch.compile and whole-step capture together."""
    plain = run_steps_on(DEV, method, plain_plan(), steps=GRAPH_STEPS, half_at=GRAPH_HALF)
    captured = run_steps_on(
        DEV, method, graph_plan(on=True, compile=True), steps=GRAPH_STEPS, half_at=GRAPH_HALF
    )
    check_captured(captured, method)
    assert captured.runner.plan.compile, captured.runner.plan.notes
    assert_close_runs(captured, plain, f"{method} compiled + captured")


# ------------------------------------------------ 8. the step checks itself (issue 27)


@pytest.mark.skipif(not IS_CUDA, reason="the self-check runs with the CUDA backend only")
@pytest.mark.parametrize("method", ("rslad", "trades", "mtard", "kdiga"))
def test_self_check_passes_on_the_gpu(method):
    """The run's first capture is compared with an eager step on the same state
    (``graph_check.py``): on a GPU the two agree, the graph stays on, the notes say so."""
    captured = run_steps_on(DEV, method, graph_plan(on=True), steps=GRAPH_STEPS, half_at=GRAPH_HALF)
    g = captured.runner.graph
    notes = captured.runner.plan.notes
    assert g.self_check and g.checked and g.counts.self_checks == 1
    assert g.off is None, notes
    assert any(n.startswith("cuda_graph self-check passed") for n in notes), notes
    eager = run_steps_on(DEV, method, graph_plan(on=False), steps=GRAPH_STEPS, half_at=GRAPH_HALF)
    assert_close_runs(captured, eager, f"{method} self-checked")


@pytest.mark.skipif(not IS_CUDA, reason="CUDA graphs")
def test_a_planted_mismatch_on_the_gpu_falls_back_with_one_warning():
    """A graph that also nudges a weight (captured with the step): the check sees the update
    differ, drops the graph and keeps the eager step's state."""
    from ardbench.train.graph import CudaGraphs

    class Nudging(CudaGraphs):
        def capture(self, fn):
            def nudged():
                out = fn()
                with torch.no_grad():
                    for p in student_params:
                        p.add_(1e-2)
                return out

            return super().capture(nudged)

    built, student, teacher, extras, batch = tiny_setup("rslad")
    for module in (student, teacher, built):
        module.to(DEV)
    student_params = list(student.parameters())[:1]
    batch = Batch(x=batch.x.to(DEV), y=batch.y.to(DEV), index=batch.index.to(DEV))
    plan = graph_plan(on=True)
    runner = stepkit.tiny_runner(built, "rslad", student, teacher, extras, plan, Nudging(DEV))
    runner.graph.self_check = True
    with pytest.warns(RuntimeWarning, match="self-check") as warned:
        for i in range(WARMUP_STEPS + 3):
            stepkit.step_values(runner, batch, epoch=0, step=i)
    assert sum("self-check" in str(w.message) for w in warned) == 1
    assert "the captured update differs" in runner.graph.off and not plan.cuda_graph
    torch.rand(1, device=DEV)  # the generator works eagerly afterwards


@pytest.mark.skipif(not IS_CUDA, reason="CUDA graphs")
def test_a_failed_capture_restores_the_stream_and_the_generator():
    """torch <= 2.12 leaves the generator in capture mode and the capture stream current
    when capture_end fails (capture_safety.py): both are restored, eager draws work."""
    from ardbench.train.capture_safety import capture_on

    side = torch.cuda.Stream(DEV)
    before = torch.cuda.current_stream(DEV)
    x = torch.ones(4, device=DEV)

    def uncapturable():
        torch.rand(1, device=DEV)  # registers the generator with the capture
        return {"v": torch.tensor([x.sum().item()], device=DEV)}  # a sync: capture fails

    with pytest.raises(RuntimeError):
        capture_on(torch.cuda.CUDAGraph(), side, DEV, uncapturable)
    assert torch.cuda.current_stream(DEV) == before
    torch.cuda.manual_seed(7)
    a = torch.rand(3, device=DEV)
    torch.cuda.manual_seed(7)
    assert torch.equal(a, torch.rand(3, device=DEV))
