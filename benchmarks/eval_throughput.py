"""Evaluator throughput: points per second of each attack column of ``ardbench eval``.

    python benchmarks/eval_throughput.py --model resnet18 --n 1000 --device cuda \\
        --attacks clean,fgsm,pgd20,cw,aa --batch-sizes 256,512,1024
    OMP_NUM_THREADS=1 python benchmarks/eval_throughput.py --model small_cnn --n 256 \\
        --device cpu --batch-sizes 64,256

Times ``ardbench.eval.evaluate_model`` (the function ``ardbench eval`` and the trainer
call) once per batch size, on ``--n`` points: a dataset spec's first test points
(``--dataset``) or random images. The evaluator times each column itself
(``EvalResult.timing_s`` / ``points_per_s``); the compliance checks and model set-up are the
rest of the wall time. ``--model`` is any model spec (``ARCH`` = random weights: the attacks'
cost does not depend on the weights, except AutoAttack, whose later stages only run on the
points the earlier ones did not break, so time AA on the real model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, sync  # noqa: E402

from ardbench.eval import evaluate_model, parse_attacks  # noqa: E402
from ardbench.models import load_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet18", help="model spec (ARCH, ARCH:PATH, ...)")
    p.add_argument("--dataset", default=None, help="dataset spec; default: random images")
    p.add_argument("--n", type=int, default=1000, help="points")
    p.add_argument("--attacks", default="clean,fgsm,pgd20,cw")
    p.add_argument("--eps", default="8/255")
    p.add_argument(
        "--batch-sizes",
        default="auto",
        help="comma list of clean/FGSM/PGD/CW batch sizes, N or auto (the evaluator's choice "
        "for the device; default)",
    )
    p.add_argument("--aa-batch-size", type=int, default=256, help="AutoAttack's batch size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true", help="NHWC model weights (fp32 still)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    attacks = parse_attacks(args.attacks)

    if args.dataset:
        from ardbench.data import load_dataset

        ds = load_dataset(args.dataset)
        x, y = ds.test_subset(args.n, device)
        num_classes = ds.num_classes
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(args.n, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (args.n,), generator=g).to(device)
        num_classes = 10
    model = load_model(args.model, num_classes=num_classes, device=device).module.eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    print(f"# device: {device_name(device)}; torch {torch.__version__}")
    layout = "channels_last" if args.channels_last else "NCHW"
    print(
        f"# model {args.model} ({layout}), {args.n} points, attacks {','.join(attacks)}, eps {args.eps}"
    )
    print(f"# AutoAttack batch size {args.aa_batch_size}; 'auto' = the evaluator's choice")
    header = f"{'batch':>6} {'column':>7} {'seconds':>9} {'points/s':>10}"
    print(header)
    out = []
    sizes = [b.strip() for b in args.batch_sizes.split(",") if b.strip()]
    for bs in [b if b == "auto" else int(b) for b in sizes]:
        sync(device)
        t0 = time.perf_counter()
        res = evaluate_model(
            model,
            x,
            y,
            attacks=attacks,
            eps=args.eps,
            batch_size=bs,
            aa_batch_size=args.aa_batch_size,
            seed=0,
            progress=False,
        )
        bs = res.batch_size  # "auto" resolved
        sync(device)
        wall = time.perf_counter() - t0
        for col in res.accuracy:
            print(f"{bs:6d} {col:>7} {res.timing_s[col]:9.2f} {res.points_per_s[col]:10.1f}")
        rest = wall - sum(res.timing_s.values())
        print(f"{bs:6d} {'total':>7} {wall:9.2f} {'':>10}  (checks and set-up {rest:.2f} s)")
        out.append(
            {
                "batch_size": bs,
                "requested": sizes[len(out)],
                "aa_batch_size": args.aa_batch_size,
                "timing_s": res.timing_s,
                "points_per_s": res.points_per_s,
                "accuracy": res.accuracy,
                "wall_s": wall,
            }
        )
    if args.json:
        payload = {"device": device_name(device), "model": args.model, "n": args.n, "runs": out}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
