"""Time ardbench's training step against a reference step computed the official code's way.

    python benchmarks/train_step.py --method rslad --teacher wrn_34_10 --student resnet18 \\
        --batch-size 128 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/train_step.py --device cpu --method rslad,ard,trades,pgd_at \\
        --teacher wrn_16_2 --student small_cnn --batch-size 32 --iters 5 --warmup 2

In one process and on the same images in the same order, per step:

(a) the reference step (``reference_steps.py``): the official script's host-side torchvision
    augmentation in its DataLoader workers, its attack as coded, eager fp32, its cuDNN flags;
(b) ardbench's step: the trainer's own path (``ardbench.train.step.TrainStep`` fed by
    ``ardbench.data.DeviceLoader``), with the method's faithful protocol and the speed features
    as ``auto`` resolves them on this device (override with ``--set train.KEY=VALUE``);
(c) with ``--plain``, also ardbench's step with every speed feature off;
(d) with ``--eager``, also ardbench's step with the same features but ``train.cuda_graph=false``
    (on CUDA ``auto`` captures the whole step as a CUDA graph: (b) is then the captured step and
    (d) the same step run eagerly; the warm-up is raised so that every timed step is a replay).

Both start from the same initial weights. Steps alternate (a, b, [c], a, b, ...) so background
load hits all sides alike; warm-up steps (compilation, cuDNN autotuning, worker start-up) are
excluded; each timed step is synchronised on CUDA; the median of ``--iters`` is reported.

FLOPs: the method's cost in forward-equivalents from ../shared/reference/methods.md §2 (an
input-only attack step = 2 F, forward + full backward = 3 F) times the forward GFLOP per image
of §5 (counted with hooks for architectures §5 does not list). The FLOP floor is that count at
the device's measured dense matmul rate (fp32; on CUDA also TF32, which cuDNN's default
convolutions use, and bf16 with ``--set train.amp=bf16``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    device_name,
    gflop_of,
    matmul_tflops,
    median_ms,
    sync,
    timed,
)
from reference_steps import (  # noqa: E402
    LOADER,
    REFERENCES,
    cudnn_flags,
    host_loader,
    reference_cost,
)

from ardbench.data import DeviceLoader  # noqa: E402
from ardbench.methods import build_method  # noqa: E402
from ardbench.models import build_arch, feature_dim, logits_and_features  # noqa: E402
from ardbench.protocols import SPEED_KEYS  # noqa: E402
from ardbench.recipes import resolve_config  # noqa: E402
from ardbench.train.graph import WARMUP_STEPS  # noqa: E402
from ardbench.train.speed import (  # noqa: E402
    compile_settings,
    cudnn_settings,
    make_optimizer,
    prepare_models,
    resolve_speed,
)
from ardbench.train.step import TrainStep, freeze, make_attack_fn  # noqa: E402

CIFAR10_TRAIN = 50_000


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC 32x32x3 images and labels (timing does not depend on pixel values)."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, n).astype(np.int64),
    )


def ardbench_side(method_name, student0, teacher0, device, args, images, labels, sets):
    """(step() consuming the next DeviceLoader batch, resolved plan, config) for ardbench."""
    cfg = resolve_config(
        method_name,
        cli={"student": args.student_arch, "train": {"batch_size": args.batch_size}},
        sets=list(sets),
    )
    method = build_method(method_name)
    student = copy.deepcopy(student0).train()
    teacher = copy.deepcopy(teacher0) if method.needs_teacher else None
    if teacher is not None:
        freeze(teacher)
    t_dim = feature_dim(teacher) if teacher is not None else None
    method.setup(
        student=student, teacher=teacher, num_classes=10, feature_dims=(feature_dim(student), t_dim)
    )
    method.to(device)
    plan = resolve_speed(cfg.train, device, method)
    prepare_models(plan, student, teacher)
    optimizer = make_optimizer(
        list(student.parameters()) + list(method.parameters()), cfg.train, plan
    )
    runner = TrainStep(
        method=method,
        method_name=method_name,
        student=student,
        teacher=teacher,
        extras={},
        optimizer=optimizer,
        attack_fn=make_attack_fn(student, cfg.attack),
        attack_cfg=cfg.attack,
        plan=plan,
        num_classes=10,
        total_epochs=cfg.train.epochs,
        features=logits_and_features,
    )
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # the dataset's uint8 NCHW
    loader = DeviceLoader(
        x,
        torch.from_numpy(labels),
        batch_size=args.batch_size,
        seed=cfg.train.seed,
        augment=True,
        device=device,
        shuffle=False,  # the same images in the same order as the reference side
    )
    batches = loader.epoch_batches(0)
    counter = iter(range(10**9))

    def step() -> None:
        batch = next(batches)
        with cudnn_settings(plan), compile_settings(plan, cfg.train.compile):
            runner(batch, epoch=0, step=next(counter))

    return step, plan, cfg


def reference_side(method_name, student0, teacher0, device, args, images, labels, cfg):
    student = copy.deepcopy(student0).train()
    teacher = None
    if teacher0 is not None and method_name in ("rslad", "ard"):
        teacher = copy.deepcopy(teacher0).eval().requires_grad_(False)
    tc = cfg.train
    optimizer = torch.optim.SGD(
        student.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    a = cfg.attack
    ref_step = REFERENCES[method_name](
        student,
        teacher,
        optimizer,
        device,
        eps=float(a.eps),
        step_size=float(a.step),
        steps=a.steps,
    )
    workers, pin = LOADER[method_name]
    if args.ref_workers is not None:
        workers = args.ref_workers
    elif device.type != "cuda":
        workers = 0  # on a CPU box workers would take the cores the computation runs on
    pin = pin and device.type == "cuda"
    n_steps = args.warmup + args.iters
    index_batches = [range(i * args.batch_size, (i + 1) * args.batch_size) for i in range(n_steps)]
    it = host_loader(images, labels, index_batches, num_workers=workers, pin_memory=pin)

    def step() -> None:
        x, y = next(it)
        with cudnn_flags(method_name):
            ref_step(x, y)

    return step, workers


def bench_one(method_name: str, student_arch: str, args, device, rates) -> dict:
    torch.manual_seed(0)
    student0 = build_arch(student_arch, 10).to(device)
    teacher0 = None
    needs_teacher = build_method(method_name).needs_teacher
    if needs_teacher:
        teacher0 = build_arch(args.teacher, 10).to(device)
    n = (args.warmup + args.iters) * args.batch_size
    images, labels = synthetic_images(n)
    args.student_arch = student_arch
    ard_step, plan, cfg = ardbench_side(
        method_name, student0, teacher0, device, args, images, labels, args.set
    )
    ref_step, workers = reference_side(
        method_name, student0, teacher0, device, args, images, labels, cfg
    )
    sides = {"reference": ref_step, "ardbench": ard_step}
    if args.eager:
        sides["ardbench_eager"], _, _ = ardbench_side(
            method_name,
            student0,
            teacher0,
            device,
            args,
            images,
            labels,
            [*args.set, "train.cuda_graph=false"],
        )
    if args.plain:
        plain_sets = [*args.set, *(f"train.{k}=false" for k in SPEED_KEYS)]
        sides["ardbench_plain"], _, _ = ardbench_side(
            method_name, student0, teacher0, device, args, images, labels, plain_sets
        )

    times: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(args.warmup + args.iters):
        for name, fn in sides.items():
            t = timed(fn, device)
            if i >= args.warmup:
                times[name].append(t)
    sync(device)

    k = cfg.attack.steps
    executed_s, useful_s, f_t = reference_cost(method_name, k)
    gf_s, src_s = gflop_of(student_arch, student0)
    gf_t, src_t = gflop_of(args.teacher, teacher0) if teacher0 is not None else (0.0, "-")
    useful_gflop = (useful_s * gf_s + f_t * gf_t) * args.batch_size
    executed_gflop = (executed_s * gf_s + f_t * gf_t) * args.batch_size
    floor_rate = rates["bf16"] if cfg.train.amp == "bf16" and "bf16" in rates else rates["floor"]
    floor_ms = useful_gflop / floor_rate  # GFLOP / (TFLOP/s) = ms
    rows = {}
    for name, ts in times.items():
        ms = median_ms(ts)
        rows[name] = {
            "ms_per_step": ms,
            "min_ms": 1000 * min(ts),
            "max_ms": 1000 * max(ts),
            "images_per_s": args.batch_size / (ms / 1000),
            "tflops": useful_gflop / ms,  # GFLOP/ms = TFLOP/s
            "x_floor": ms / floor_ms,
            "est_cifar10_epoch_s": math.ceil(CIFAR10_TRAIN / args.batch_size) * ms / 1000,
        }
    return {
        "method": method_name,
        "student": student_arch,
        "teacher": args.teacher if needs_teacher else None,
        "batch_size": args.batch_size,
        "attack_steps": k,
        "student_gflop": gf_s,
        "student_gflop_source": src_s,
        "teacher_gflop": gf_t,
        "teacher_gflop_source": src_t,
        "cost_forwards": {"executed_by_reference_S": executed_s, "useful_S": useful_s, "T": f_t},
        "useful_gflop_per_step": useful_gflop,
        "reference_executed_gflop_per_step": executed_gflop,
        "floor_rate_tflops": floor_rate,
        "floor_ms": floor_ms,
        "speed_plan": plan.to_dict(),
        "reference_loader_workers": workers,
        "iters": args.iters,
        "warmup": args.warmup,
        "rows": rows,
        "speedup": rows["reference"]["ms_per_step"] / rows["ardbench"]["ms_per_step"],
        "graph_speedup": (
            rows["ardbench_eager"]["ms_per_step"] / rows["ardbench"]["ms_per_step"]
            if "ardbench_eager" in rows
            else None
        ),
    }


def print_result(r: dict) -> None:
    teacher = f", teacher {r['teacher']} ({r['teacher_gflop']:.3f} GFLOP)" if r["teacher"] else ""
    c = r["cost_forwards"]
    cost = f"{c['useful_S']:g} F_S" + (f" + {c['T']:g} F_T" if c["T"] else "")
    if c["executed_by_reference_S"] != c["useful_S"]:
        cost += f" (the reference executes {c['executed_by_reference_S']:g} F_S)"
    print(
        f"\n## {r['method']}: student {r['student']} ({r['student_gflop']:.3f} GFLOP/img)"
        f"{teacher}, batch {r['batch_size']}, PGD-{r['attack_steps']}"
    )
    print(
        f"cost {cost} = {r['useful_gflop_per_step']:.1f} GFLOP/step; floor "
        f"{r['floor_ms']:.2f} ms at {r['floor_rate_tflops']:.2f} TFLOP/s; median of "
        f"{r['iters']} steps after {r['warmup']} warm-up"
    )
    plan = r["speed_plan"]
    on = [k for k in ("channels_last", "compile", "fused_optimizer", "share_teacher") if plan[k]]
    on += [k for k in ("cudnn_benchmark", "cuda_graph") if plan.get(k)]
    print(f"ardbench speed features: {', '.join(on) or 'none'}; amp {plan['amp']}")
    print(
        f"{'':16} {'ms/step':>9} {'(min-max)':>17} {'img/s':>8} {'TFLOP/s':>8} "
        f"{'x floor':>8} {'epoch s*':>9}"
    )
    for name, row in r["rows"].items():
        rng = f"({row['min_ms']:.1f}-{row['max_ms']:.1f})"
        print(
            f"{name:16} {row['ms_per_step']:9.1f} {rng:>17} {row['images_per_s']:8.1f} "
            f"{row['tflops']:8.3f} {row['x_floor']:8.1f} {row['est_cifar10_epoch_s']:9.1f}"
        )
    print(f"speed-up ardbench vs reference: {r['speedup']:.2f}x")
    if r.get("graph_speedup") and plan.get("cuda_graph"):
        print(f"speed-up ardbench vs ardbench_eager (the graph's gain): {r['graph_speedup']:.2f}x")
    for note in plan.get("notes", []):
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="rslad", help="comma list of rslad, ard, trades, pgd_at")
    p.add_argument("--student", default="resnet18", help="comma list of architectures")
    p.add_argument("--teacher", default="wrn_34_10")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=None, help="timed steps (20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (5 CUDA, 2 CPU)")
    p.add_argument("--ref-workers", type=int, default=None,
                   help="reference DataLoader workers (default: the official script's on CUDA, 0 on CPU)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="ardbench config override, e.g. train.compile=false, train.amp=bf16")  # fmt: skip
    p.add_argument("--plain", action="store_true", help="also time ardbench with every speed feature off")  # fmt: skip
    p.add_argument("--eager", action="store_true", help="also time ardbench with train.cuda_graph=false")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.iters = args.iters or (20 if cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 2)
    if cuda:  # captured: eager warm-up steps, then the capture; time replays only
        args.warmup = max(args.warmup, WARMUP_STEPS + 2)

    rates = {"fp32": matmul_tflops(device)}
    if cuda:
        rates["tf32"] = matmul_tflops(device, tf32=True)
        rates["bf16"] = matmul_tflops(device, torch.bfloat16)
    rates["floor"] = rates.get("tf32", rates["fp32"])
    print(f"# device: {device_name(device)}; torch {torch.__version__}")
    print(
        "# measured matmul rate (TFLOP/s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in rates.items() if k != "floor")
        + f"; FLOP floor at {rates['floor']:.2f}"
    )
    print("# epoch s* = ceil(50000 / batch) x median step: an estimate, not a measured epoch")
    results = []
    for method in [m.strip() for m in args.method.split(",") if m.strip()]:
        if method not in REFERENCES:
            p.error(f"no reference step for {method!r}; choose from {', '.join(REFERENCES)}")
        for student in [s.strip() for s in args.student.split(",") if s.strip()]:
            r = bench_one(method, student, args, device, rates)
            print_result(r)
            results.append(r)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": device_name(device), "rates": rates, "results": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
