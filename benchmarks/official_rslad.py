"""Time the official RSLAD training script (zibojia/RSLAD), unmodified, for calibration.

    # on a CUDA machine: the calibration figure (issue 6)
    python benchmarks/official_rslad.py --official .bench/official/RSLAD \\
        --script resnet18_rslad_cifar10.py --json official.json [--compare rslad_resnet18.json]
    # on a CPU box: a smoke test of this harness only, NOT a calibration
    OMP_NUM_THREADS=1 python benchmarks/official_rslad.py --official .bench/official/RSLAD \\
        --n-synthetic 512 --steps 3 --warmup 1 --smoke-batch-size 16

``--official DIR`` is a checkout of zibojia/RSLAD (its files on disk; kept outside the
repository, never committed: ``benchmarks/prepare_device.sh`` exports one into the git-ignored
``.bench/``). Nothing of it is copied here: its script runs as it is, with ``runpy.run_path``,
in a temporary working directory holding ``./models/model_cifar_wrn.pt`` = a state dict of the
checkout's own ``wideresnet()`` (random initialisation: the step's cost does not depend on the
weights), with DIR first on ``sys.path`` (the script star-imports ``rslad_loss`` and
``cifar10_models``). Around the run, and all undone afterwards:

- ``torchvision.datasets.CIFAR10`` is a subclass of torchvision's own CIFAR10 whose
  ``__init__`` takes the images from arrays instead of ``./data`` (the script passes
  ``download=True``, impossible offline); ``__getitem__`` and ``__len__`` are torchvision's, so
  each item is the same PIL image through the script's own transform. Train images: ``--data``
  (an npz with ``x_train`` uint8 NHWC and ``y_train``) or ``--n-synthetic`` random uint8
  images (timing does not depend on pixel values); the test set is 256 of them (the script's
  per-epoch evaluation only runs at epoch 20, never reached: we stop in epoch 1).
- a global optimizer step post-hook (``torch.optim.optimizer.register_optimizer_step_post_hook``;
  the SGD step itself is untouched) synchronises CUDA, records ``time.perf_counter()`` after
  each step, and raises a private exception after ``--warmup + --steps`` steps, which stops the
  script inside its training loop.
- the script runs under the module name ``__rslad_official__`` (not ``__main__``, so DataLoader
  workers started by spawn/forkserver re-import this harness, not the script), ``sys.argv`` is
  ``[script]``, and the cuDNN flags it sets (``deterministic = True``) are restored afterwards;
  the modules it imported from DIR are dropped from ``sys.modules``.
- CPU mode only (no CUDA visible): ``Tensor.cuda`` and ``Module.cuda`` return their object
  unchanged, so the script runs on the CPU. ``--smoke-batch-size B`` (refused with CUDA) makes
  ``torch.utils.data.DataLoader`` ignore the script's hard-coded ``batch_size=128`` so a smoke
  run takes seconds (one step at 128 is about a minute on one CPU thread). CPU mode exercises
  this harness; its figures are no calibration. Hide CUDA (``CUDA_VISIBLE_DEVICES=``) to smoke
  test on a GPU machine.

Each timed interval is the wall time between consecutive optimizer steps: the whole loop body
(the DataLoader with the script's ``num_workers=2`` and per-image PIL augmentation, the
host-to-device copies, the teacher forward, PGD-10, the student update), exactly what the script
costs per step. The first ``--warmup`` steps (workers starting, cuDNN and allocator warm-up) are
not timed; the median and min-max of the ``--steps`` intervals are reported, with images/s and
the estimated 391-step epoch. ``--compare`` prints a ``train_step.py --json`` result's rows for
the same method, student and batch beside it (the reference step emulates this script's
computation). On SIGTERM (``timeout``) the run stops, cleans up, and reports the steps timed so
far, exiting 124. Runs of 10 + 50 steps stay in epoch 1, so the script's ``loss.item()`` (every
100 steps) falls in warm-up (step 0) and never in the timed window.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import re
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torchvision.datasets import CIFAR10
from torchvision.datasets.vision import VisionDataset

SCRIPTS = {  # script -> (student, as ardbench names it); the teacher is WRN-34-10 in both
    "resnet18_rslad_cifar10.py": "resnet18",
    "mobilenet_v2_rslad_cifar10.py": "mobilenetv2",
}
CIFAR10_TRAIN = 50_000
RUN_NAME = "__rslad_official__"


class StopScript(Exception):
    """Raised from the optimizer step hook once enough steps are recorded."""


class ArrayCIFAR10(CIFAR10):
    """torchvision's CIFAR10 with its images taken from arrays rather than ``root``.

    Only ``__init__`` differs: ``data`` (uint8 NHWC) and ``targets`` (a list of ints) are what
    torchvision's loader would set, so its ``__getitem__`` yields the same PIL images through the
    caller's transform. Defined at module level so DataLoader workers can unpickle it under any
    start method; the arrays are handed over through ``ARRAYS`` before the script runs.
    """

    ARRAYS: dict[bool, tuple[np.ndarray, list[int]]] = {}

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        self.data, self.targets = self.ARRAYS[bool(train)]


class _SmokeDataLoader(torch.utils.data.DataLoader):
    """CPU smoke runs only: the script's DataLoader with another batch size."""

    batch_size_override = 0

    def __init__(self, *args, **kwargs):
        if "batch_size" in kwargs:
            kwargs["batch_size"] = self.batch_size_override
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value``; afterwards restore it exactly (or delete an attribute that was
    only inherited, e.g. ``torch.Tensor.cuda``, which lives on ``torch._C.TensorBase``)."""
    own = name in vars(obj)
    before = vars(obj)[name] if own else None
    setattr(obj, name, value)
    try:
        yield
    finally:
        if own:
            setattr(obj, name, before)
        else:
            delattr(obj, name)


def _identity(self, *args, **kwargs):
    return self


def load_images(args) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(x_train, y_train, x_test, y_test, description); uint8 NHWC images, int labels."""
    if args.data:
        z = np.load(args.data)
        x, y = np.ascontiguousarray(z["x_train"], dtype=np.uint8), z["y_train"].astype(np.int64)
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise SystemExit(f"{args.data}: x_train must be uint8 (N, 32, 32, 3), got {x.shape}")
        if "x_test" in z.files:
            xt, yt = np.ascontiguousarray(z["x_test"][:256], dtype=np.uint8), z["y_test"][:256]
        else:
            xt, yt = x[:256], y[:256]
        return x, y, xt, yt.astype(np.int64), f"{args.data} ({len(x)} training images)"
    rng = np.random.default_rng(0)
    n = args.n_synthetic
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y, x[:256], y[:256], f"synthetic random uint8, {n} images"


def official_commit(official: Path, given: str | None) -> tuple[str | None, str]:
    """(sha, where it came from): the checkout's HEAD, else --commit, else DIR/COMMIT."""
    if (official / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(official), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            return sha, "git checkout"
        except (OSError, subprocess.CalledProcessError):
            pass
    if given:
        return given, "--commit"
    if (official / "COMMIT").is_file():
        return (official / "COMMIT").read_text().strip(), f"{official / 'COMMIT'}"
    return None, "unknown"


def script_batch_size(source: str) -> int:
    """The script's hard-coded ``batch_size = N`` (128 in both CIFAR-10 scripts)."""
    m = re.search(r"^batch_size\s*=\s*(\d+)", source, re.M)
    if not m:
        raise SystemExit("could not find the script's `batch_size = N` line")
    return int(m.group(1))


def device_label(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"CPU {name} ({torch.get_num_threads()} torch thread(s))"


def run_official(args, official: Path, x, y, xt, yt) -> dict[str, Any]:
    """Run the script until warmup + steps optimizer steps; return the step times."""
    cuda = torch.cuda.is_available()
    total = args.warmup + args.steps
    stamps: list[float] = []

    def after_step(optimizer, a, kw) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) >= total:
            raise StopScript

    modules_before = set(sys.modules)
    cwd = os.getcwd()
    cudnn_before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    argv_before = sys.argv
    sys.path.insert(0, str(official))
    work = Path(tempfile.mkdtemp(prefix="rslad-official-"))
    stopped = terminated = False

    def on_sigterm(signum, frame) -> None:  # `timeout`: stop, clean up, report what was timed
        raise StopScript("SIGTERM")

    sigterm_before = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        # Their own WRN-34-10, random weights, where the script loads its teacher from.
        from cifar10_models import wideresnet  # type: ignore[import-not-found]

        (work / "models").mkdir()
        torch.save(wideresnet().state_dict(), work / "models" / "model_cifar_wrn.pt")
        ArrayCIFAR10.ARRAYS = {True: (x, y.tolist()), False: (xt, yt.tolist())}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(torchvision.datasets, "CIFAR10", ArrayCIFAR10))
            stack.callback(register_optimizer_step_post_hook(after_step).remove)
            if not cuda:
                stack.enter_context(patched(torch.Tensor, "cuda", _identity))
                stack.enter_context(patched(nn.Module, "cuda", _identity))
                if args.smoke_batch_size:
                    _SmokeDataLoader.batch_size_override = args.smoke_batch_size
                    stack.enter_context(patched(torch.utils.data, "DataLoader", _SmokeDataLoader))
            os.chdir(work)
            sys.argv = [str(official / args.script)]
            t0 = time.perf_counter()
            try:
                runpy.run_path(str(official / args.script), run_name=RUN_NAME)
            except StopScript as e:
                stopped, terminated = True, bool(e.args)
    except StopScript:  # SIGTERM before the script started
        terminated = True
    finally:
        signal.signal(signal.SIGTERM, sigterm_before)
        os.chdir(cwd)
        sys.argv = argv_before
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_before
        with contextlib.suppress(ValueError):
            sys.path.remove(str(official))
        for name in set(sys.modules) - modules_before:
            if name in ("rslad_loss", "cifar10_models") or name.startswith("cifar10_models."):
                del sys.modules[name]
        ArrayCIFAR10.ARRAYS = {}
        gc.collect()  # the script's DataLoader iterator, and so its workers, go now
        shutil.rmtree(work, ignore_errors=True)
    if terminated and len(stamps) <= args.warmup:
        raise SystemExit(f"terminated after {len(stamps)} optimizer steps, none of them timed")
    if terminated:
        print(f"# terminated: {len(stamps) - args.warmup} of {args.steps} timed steps recorded")
    elif not stopped:
        raise SystemExit(f"the script ended after {len(stamps)} optimizer steps, before {total}")
    intervals = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "first_step_after_s": stamps[0] - t0,
        "warmup_intervals_s": intervals[: args.warmup - 1],
        "intervals_s": intervals[args.warmup - 1 :],
        "peak_cuda_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "terminated": terminated,
    }


def compare_rows(path: Path, student: str, batch: int) -> list[tuple[str, float, float, float]]:
    """(side, ms/step, min, max) of train_step.py's rslad result for this student and batch."""
    data = json.loads(path.read_text())
    for r in data.get("results", []):
        if (
            r.get("method") == "rslad"
            and r.get("student") == student
            and r.get("batch_size") == batch
        ):
            rows = [
                (f"train_step {name}", v["ms_per_step"], v["min_ms"], v["max_ms"])
                for name, v in r["rows"].items()
            ]
            return rows
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--official", type=Path, required=True, help="a checkout of zibojia/RSLAD")
    p.add_argument("--script", default="resnet18_rslad_cifar10.py", choices=sorted(SCRIPTS))
    p.add_argument("--steps", type=int, default=50, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (at least 1)")
    p.add_argument("--data", type=Path, help="npz with x_train uint8 (N,32,32,3) and y_train")
    p.add_argument("--n-synthetic", type=int, default=CIFAR10_TRAIN,
                   help="random training images when no --data (default 50000)")  # fmt: skip
    p.add_argument("--commit", help="the checkout's commit, when DIR is no git checkout")
    p.add_argument("--smoke-batch-size", type=int, default=0,
                   help="CPU smoke runs only: override the script's batch size")  # fmt: skip
    p.add_argument("--compare", type=Path, help="a train_step.py --json result to print beside")
    p.add_argument("--json", type=Path, help="write everything here")
    args = p.parse_args(argv)
    official = args.official.resolve()
    if not (official / args.script).is_file():
        p.error(f"{official / args.script} not found")
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1 (intervals are between steps)")
    cuda = torch.cuda.is_available()
    if args.compare and not args.compare.is_file():
        p.error(f"--compare {args.compare}: no such file")
    if args.smoke_batch_size and cuda:
        p.error("--smoke-batch-size is for CPU smoke runs only; a calibration keeps batch 128")

    source = (official / args.script).read_text()
    batch = args.smoke_batch_size or script_batch_size(source)
    x, y, xt, yt, data_desc = load_images(args)
    steps_per_epoch = math.ceil(len(x) / batch)
    if steps_per_epoch < args.warmup + args.steps:
        print(
            f"# note: {len(x)} images = {steps_per_epoch} steps per epoch < "
            f"{args.warmup + args.steps}: the timed steps cross an epoch boundary"
        )
    sha, sha_from = official_commit(official, args.commit)
    mode = "cuda" if cuda else "cpu (smoke test of the harness, not a calibration)"
    print(f"# running {official / args.script} unmodified; {mode}", flush=True)

    timing = run_official(args, official, x, y, xt, yt)
    ts = timing["intervals_s"]
    med = statistics.median(ts)
    result = {
        "script": args.script,
        "official_dir": str(official),
        "official_commit": sha,
        "official_commit_from": sha_from,
        "student": SCRIPTS[args.script],
        "teacher": "wrn_34_10",
        "batch_size": batch,
        "batch_size_patched": bool(args.smoke_batch_size),
        "calibration": cuda,
        "mode": mode,
        "device": device_label(cuda),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if cuda else None,
        "data": data_desc,
        "steps": len(ts),
        "steps_requested": args.steps,
        "warmup": args.warmup,
        "ms_per_step": 1000 * med,
        "min_ms": 1000 * min(ts),
        "max_ms": 1000 * max(ts),
        "mean_ms": 1000 * statistics.fmean(ts),
        "images_per_s": batch / med,
        "est_cifar10_epoch_s": math.ceil(CIFAR10_TRAIN / batch) * med,
        **timing,
    }
    others = compare_rows(args.compare, result["student"], batch) if args.compare else []
    if args.compare:
        result["compare"] = {"file": str(args.compare), "rows": others}

    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    short = sha[:12] if sha else "unknown commit"
    print(f"\n## official RSLAD script, unmodified (zibojia/RSLAD @ {short}; {sha_from})")
    print(f"{result['script']}: student {result['student']}, teacher WRN-34-10, PGD-10, batch {batch}"
          + (" (patched for a CPU smoke run)" if args.smoke_batch_size else ""))  # fmt: skip
    print(f"device {result['device']}; torch {torch.__version__}; data {data_desc}")
    if not cuda:
        print("CPU MODE: a smoke test of this harness, not a calibration")
    print(
        f"median of {len(ts)} steps after {args.warmup} warm-up; first step "
        f"{timing['first_step_after_s']:.1f} s after start (imports, models, teacher load, workers)"
    )
    print(f"{'':28} {'ms/step':>9} {'(min-max)':>19} {'img/s':>8} {'epoch s*':>9}")
    rows = [("official script", result["ms_per_step"], result["min_ms"], result["max_ms"])]
    for name, ms, lo, hi in rows + others:
        rng = f"({lo:.1f}-{hi:.1f})"
        epoch = math.ceil(CIFAR10_TRAIN / batch) * ms / 1000
        print(f"{name:28} {ms:9.1f} {rng:>19} {batch / (ms / 1000):8.1f} {epoch:9.1f}")
    if others:
        ref = next((ms for name, ms, _, _ in others if name.endswith(" reference")), None)
        if ref:
            print(f"reference step / official script: {ref / result['ms_per_step']:.2f}")
    print("epoch s* = ceil(50000 / batch) x median step")
    return 124 if timing["terminated"] else 0  # 124, as `timeout` exits


if __name__ == "__main__":
    sys.exit(main())
