"""The real trainer's epoch against the sum of its steps: the trainer's overhead, host reads.

    python benchmarks/epoch_time.py --method rslad --teacher wrn_34_10 --student resnet18 \\
        --n-train 50000 --device cuda --graph both --json epoch.json
    OMP_NUM_THREADS=1 python benchmarks/epoch_time.py --method rslad --teacher wrn_16_2 \\
        --student small_cnn --n-train 512 --batch-size 32 --device cpu --profile

Runs ``ardbench.train.trainer.train`` for ``--epochs`` epochs (default 2) on ``--dataset`` or on
synthetic CIFAR-shaped uint8 images (``--n-train`` of them; timing does not depend on pixel
values) and stops before the final evaluation. Per epoch it reports:

- **real epoch**: wall time from the start of ``run_epoch`` to the end of the epoch's
  checkpoint write (everything the trainer does for that epoch), and the log's
  ``epoch_time_s`` (the same without the checkpoint);
- **sum of steps**: each ``TrainStep`` call timed — on CUDA between two CUDA events recorded
  on the stream around the call (the GPU's time inside the step, no synchronisation added),
  on the CPU with the wall clock;
- **overhead** = real epoch − sum of steps (loader, progress, epoch-end work: stats read,
  probe, checkpoint, and on CUDA any gap where the GPU waits for the host between steps),
  absolute, in % of the epoch and per step;
- **host reads**, counted by ``ardbench.train.host_reads.count_host_reads`` for the whole run:
  inside steps (per step) and outside them (per epoch: the epoch's one stats read, the
  checkpoint's finiteness check, the probe).

``--graph``: ``off`` (eager), ``on``/``auto`` (``train.cuda_graph``, CUDA only), ``both`` (the
default on CUDA: an eager run then a captured run, and their ratio). The first epoch includes
one-off costs (torch.compile, cuDNN autotuning, the graph's warm-up and capture); the last is
the steady-state figure. ``--profile`` runs the last epoch under ``torch.profiler`` and prints
the top-level operations outside the steps. Teachers given as ``ARCH`` have random weights.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, gflop_of, matmul_tflops  # noqa: E402
from reference_steps import reference_cost  # noqa: E402

from ardbench.models import build_arch  # noqa: E402
from ardbench.recipes import resolve_config  # noqa: E402
from ardbench.train import trainer  # noqa: E402
from ardbench.train.host_reads import count_host_reads  # noqa: E402
from ardbench.train.step import TrainStep  # noqa: E402

STEP_LABEL = "ardbench::train_step"
# once-per-epoch work, labelled in the profile (the methods wrapped by EpochMeter.install)
PHASES = {
    "loader_epoch": ("ardbench.data.loader", "DeviceLoader", "epoch_data"),
    "stats_read": ("ardbench.train.stats", "EpochStats", "read"),
    "probe": ("ardbench.train.selection", "Probe", "measure"),
}


class EpochMeter:
    """Patches the trainer for one run: epoch window, per-step times, host reads."""

    def __init__(self, device: torch.device, profile_epoch: int | None) -> None:
        self.cuda = device.type == "cuda"
        self.profile_epoch = profile_epoch
        self.epochs: list[dict] = []
        self.reads = None
        self._steps: list = []
        self._reads_in = 0
        self._t0 = 0.0
        self._reads0 = 0
        self._prof = None

    def install(self, monkeypatch) -> None:
        real_call, real_epoch, real_save = (
            TrainStep.__call__,
            trainer.run_epoch,
            trainer.save_checkpoint,
        )
        meter = self

        def step_call(step_self, batch, **kw):
            before = meter.reads.count
            if meter.cuda:
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                with torch.profiler.record_function(STEP_LABEL):
                    out = real_call(step_self, batch, **kw)
                end.record()
                meter._steps.append((start, end))
            else:
                t0 = time.perf_counter()
                with torch.profiler.record_function(STEP_LABEL):
                    out = real_call(step_self, batch, **kw)
                meter._steps.append(time.perf_counter() - t0)
            meter._reads_in += meter.reads.count - before
            return out

        def run_epoch(loop, epoch, reporter):
            meter._steps, meter._reads_in = [], 0
            if meter.cuda:
                torch.cuda.synchronize()
            if epoch == meter.profile_epoch:
                meter._prof = torch.profiler.profile(activities=_activities(meter.cuda))
                meter._prof.start()
            meter._reads0 = meter.reads.count
            meter._t0 = time.perf_counter()
            return real_epoch(loop, epoch, reporter)

        def save_checkpoint(run_dir, state):
            with torch.profiler.record_function("ardbench::checkpoint"):
                real_save(run_dir, state)
            meter._end_epoch(int(state["epoch"]))

        # the epoch-end checkpoint: state copy to the CPU, finiteness check, atomic write
        for name in ("_checkpoint_state", "all_finite"):
            if hasattr(trainer, name):
                monkeypatch(
                    trainer, name, _labelled("ardbench::checkpoint", getattr(trainer, name))
                )
        for label, (module, cls, name) in PHASES.items():
            owner = getattr(importlib.import_module(module), cls)
            if hasattr(owner, name):  # (an older ardbench may lack one)
                monkeypatch(owner, name, _labelled(f"ardbench::{label}", getattr(owner, name)))
        monkeypatch(TrainStep, "__call__", step_call)
        monkeypatch(trainer, "run_epoch", run_epoch)
        monkeypatch(trainer, "save_checkpoint", save_checkpoint)

    def _end_epoch(self, epoch: int) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        real = time.perf_counter() - self._t0
        if self.cuda:
            steps_s = sum(a.elapsed_time(b) for a, b in self._steps) / 1000
        else:
            steps_s = sum(self._steps)
        n = len(self._steps)
        reads_out = self.reads.count - self._reads0 - self._reads_in
        row = {
            "epoch": epoch,
            "steps": n,
            "real_s": real,
            "steps_s": steps_s,
            "ms_per_step": 1000 * steps_s / max(n, 1),
            "overhead_s": real - steps_s,
            "overhead_pct": 100 * (real - steps_s) / real,
            "overhead_ms_per_step": 1000 * (real - steps_s) / max(n, 1),
            "host_reads_in_steps": self._reads_in,
            "host_reads_per_step": self._reads_in / max(n, 1),
            "host_reads_outside_steps": reads_out,
        }
        if self._prof is not None:
            self._prof.stop()
            row["profile"] = outside_steps(self._prof, n)
            self._prof = None
        self.epochs.append(row)


def _labelled(label: str, fn):
    def wrapper(*args, **kwargs):
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)

    return wrapper


def _activities(cuda: bool) -> list:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def outside_steps(prof, steps: int, top: int = 10) -> dict:
    """The profiled epoch's host time outside the steps: per labelled once-per-epoch phase
    (checkpoint, probe, stats read, the loader's epoch build), and the top-level operations
    outside every step and phase, with their count per step, the largest first."""
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    labels = {STEP_LABEL, "ardbench::checkpoint", *(f"ardbench::{k}" for k in PHASES)}
    ranges = [(e.time_range.start, e.time_range.end, e.name) for e in events if e.name in labels]
    phase_ms: Counter = Counter()
    for a, b, name in ranges:
        phase_ms[name.removeprefix("ardbench::")] += (b - a) / 1000

    def inside(e) -> bool:
        return any(a <= e.time_range.start <= b for a, b, _ in ranges)

    total: Counter = Counter()
    count: Counter = Counter()
    for e in events:
        if e.cpu_parent is not None or e.name in labels or inside(e):
            continue
        total[e.name] += e.time_range.elapsed_us()
        count[e.name] += 1
    ops = [
        {
            "op": name,
            "calls": count[name],
            "calls_per_step": count[name] / max(steps, 1),
            "host_ms": us / 1000,
        }  # fmt: skip
        for name, us in total.most_common(top)
    ]
    return {
        "steps_host_ms": phase_ms.pop("train_step", 0.0),
        "phases_host_ms": dict(phase_ms),
        "other_ops": sum(count.values()),
        "other_ops_per_step": sum(count.values()) / max(steps, 1),
        "other_host_ms": sum(total.values()) / 1000,
        "top": ops,
    }


class _Patch:
    def __init__(self) -> None:
        self.saved: list = []

    def __call__(self, obj, name, value) -> None:
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self) -> None:
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)


def run_variant(args, dataset: str, graph: str, tmp: Path) -> dict:
    cli = {
        "dataset": dataset,
        "student": args.student,
        "device": args.device,
        # one epoch more than timed, so the run stops before the final evaluation
        "train": {"epochs": args.epochs + 1, "batch_size": args.batch_size},
    }
    if args.teacher:
        cli["teacher"] = args.teacher
    sets = [*args.set, f"train.cuda_graph={'auto' if graph in ('on', 'auto') else 'false'}"]
    if args.dataset is not None:
        sets.append(f"train.train_subset={args.n_train}")
    cfg = resolve_config(args.method, cli=cli, sets=sets)
    device = torch.device(args.device)
    meter = EpochMeter(device, args.epochs - 1 if args.profile else None)  # 0-based
    patch = _Patch()
    meter.install(patch)
    try:
        with count_host_reads() as reads:
            meter.reads = reads
            res = trainer.train(
                cfg, runs_dir=tmp / f"runs-{graph}", progress=False, stop_after_epoch=args.epochs
            )
    finally:
        patch.undo()
    logged = [json.loads(line) for line in (res.run_dir / "log.jsonl").read_text().splitlines()]
    for row, log in zip(meter.epochs, logged, strict=True):
        row["log_epoch_time_s"] = log["epoch_time_s"]
    return {"graph": graph, "speed": logged[-1]["speed"], "epochs": meter.epochs}


def print_variant(v: dict, n: int) -> None:
    speed = v["speed"]
    on = [k for k, val in speed.items() if val is True]
    print(
        f"\n## cuda_graph={v['graph']}: features on: {', '.join(on) or 'none'}; amp {speed['amp']}"
    )
    for note in speed["notes"]:
        print(f"   note: {note}")
    print(
        f"{'epoch':>5} {'real s':>8} {'log s':>7} {'steps':>5} {'sum steps s':>11} "
        f"{'ms/step':>8} {'overhead s':>10} {'%':>6} {'ms/step':>8} {'reads/step':>10} "
        f"{'reads out':>9} {'img/s':>7}"
    )
    for r in v["epochs"]:
        print(
            f"{r['epoch']:5d} {r['real_s']:8.2f} {r['log_epoch_time_s']:7.2f} {r['steps']:5d} "
            f"{r['steps_s']:11.2f} {r['ms_per_step']:8.1f} {r['overhead_s']:10.3f} "
            f"{r['overhead_pct']:6.1f} {r['overhead_ms_per_step']:8.2f} "
            f"{r['host_reads_per_step']:10.2f} {r['host_reads_outside_steps']:9d} "
            f"{n / r['real_s']:7.0f}"
        )
        p = r.get("profile")
        if p:
            phases = ", ".join(f"{k} {v:.1f} ms" for k, v in p["phases_host_ms"].items())
            print(
                f"      profile (host side): steps {p['steps_host_ms']:.1f} ms; once per epoch: "
                f"{phases or 'none'}; anything else: {p['other_ops']} top-level ops "
                f"({p['other_ops_per_step']:.2f}/step), {p['other_host_ms']:.1f} ms"
            )
            for o in p["top"]:
                print(
                    f"        {o['host_ms']:9.2f} ms {o['calls']:6d} calls "
                    f"({o['calls_per_step']:.2f}/step)  {o['op']}"
                )


def flop_floor(args, attack_steps: int) -> dict | None:
    """The step's useful FLOPs (reference §2 forward-equivalents x §5 GFLOP per image) at the
    measured dense matmul rate (TF32 on CUDA, fp32 on the CPU): ms per step at best."""
    try:
        _, useful_s, f_t = reference_cost(args.method, attack_steps)
    except KeyError:
        return None
    device = torch.device(args.device)
    gf_s, _ = gflop_of(args.student, build_arch(args.student, 10))
    gf_t = gflop_of(args.teacher, build_arch(args.teacher, 10))[0] if args.teacher else 0.0
    gflop = (useful_s * gf_s + f_t * gf_t) * args.batch_size
    cuda = device.type == "cuda"
    rate = matmul_tflops(device, tf32=cuda)
    return {"gflop_per_step": gflop, "rate_tflops": rate, "rate": "tf32" if cuda else "fp32",
            "floor_ms_per_step": gflop / rate}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="rslad")
    p.add_argument("--teacher", default="wrn_34_10")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--dataset", default=None, help="dataset spec; default: synthetic images")
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--graph", choices=("auto", "on", "off", "both"), default=None,
                   help="train.cuda_graph: both (default on CUDA) = an eager and a captured run")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="torch.profiler on the last epoch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    graph = args.graph or ("both" if cuda else "off")
    variants = ["on", "off"] if graph == "both" else [graph]  # the new figure first

    tmp = Path(tempfile.mkdtemp(prefix="ardbench-epoch-"))
    dataset = args.dataset
    if dataset is None:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (args.n_train, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, args.n_train)
        np.savez(tmp / "synthetic.npz", x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])
        dataset = f"npz:{tmp / 'synthetic.npz'}"
    n = args.n_train
    print(
        f"# {args.method}: student {args.student}, teacher {args.teacher}, batch "
        f"{args.batch_size}, {n} training images; {device_name(torch.device(args.device))}; "
        f"torch {torch.__version__}"
    )
    results = []
    for v in variants:
        r = run_variant(args, dataset, v, tmp)
        print_variant(r, n)
        results.append(r)
    floor = flop_floor(args, resolve_config(args.method, cli={}, sets=args.set).attack.steps)
    if floor:
        print(
            f"\nFLOP floor: {floor['gflop_per_step']:.1f} GFLOP/step at "
            f"{floor['rate_tflops']:.2f} TFLOP/s ({floor['rate']}) = "
            f"{floor['floor_ms_per_step']:.2f} ms/step"
        )
        for r in results:
            last = r["epochs"][-1]
            last["x_floor"] = last["ms_per_step"] / floor["floor_ms_per_step"]
            print(f"  cuda_graph={r['graph']}: {last['x_floor']:.2f}x the floor (last epoch)")
    if len(results) == 2:
        b, a = (r["epochs"][-1] for r in results)  # a: eager, b: captured
        print(
            f"\neager -> captured, epoch {a['epoch']}: {a['real_s']:.2f} -> {b['real_s']:.2f} s "
            f"({a['real_s'] / b['real_s']:.2f}x), {a['ms_per_step']:.1f} -> "
            f"{b['ms_per_step']:.1f} ms/step ({a['ms_per_step'] / b['ms_per_step']:.2f}x)"
        )
    if args.json:
        out = {
            "device": device_name(torch.device(args.device)),
            "torch": torch.__version__,
            "method": args.method,
            "student": args.student,
            "teacher": args.teacher,
            "batch_size": args.batch_size,
            "n_train": n,
            "floor": floor,
            "variants": results,
        }
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
