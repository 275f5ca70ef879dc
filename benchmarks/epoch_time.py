"""End-to-end epoch time of the real trainer (data, augmentation, attack, step, logging,
checkpoint), the figure behind the "epoch under 20 s" target.

    python benchmarks/epoch_time.py --method rslad --teacher wrn_34_10 --student resnet18 \\
        --n-train 50000 --device cuda
    OMP_NUM_THREADS=1 python benchmarks/epoch_time.py --method rslad --teacher wrn_16_2 \\
        --student small_cnn --n-train 512 --batch-size 32 --device cpu

Runs ``ardbench.train.trainer.train`` for ``--epochs`` epochs (default 2) on ``--dataset`` or on
synthetic CIFAR-shaped uint8 images (``--n-train`` of them; timing does not depend on pixel
values), stops before the final evaluation, and prints each epoch's ``epoch_time_s`` from
``log.jsonl``. The first epoch includes one-off costs (torch.compile, cuDNN autotuning); the
last one is the steady-state figure. Teachers given as ``ARCH`` have random weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ardbench.recipes import resolve_config
from ardbench.train.trainer import train


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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="ardbench-epoch-"))
    dataset = args.dataset
    if dataset is None:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (args.n_train, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, args.n_train)
        np.savez(tmp / "synthetic.npz", x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])
        dataset = f"npz:{tmp / 'synthetic.npz'}"
    cli = {
        "dataset": dataset,
        "student": args.student,
        "device": args.device,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size},
    }
    if args.teacher:
        cli["teacher"] = args.teacher
    sets = [*args.set]
    if args.dataset is not None:
        sets.append(f"train.train_subset={args.n_train}")
    cfg = resolve_config(args.method, cli=cli, sets=sets)
    res = train(cfg, runs_dir=tmp / "runs", progress=False, stop_after_epoch=args.epochs)
    rows = [json.loads(line) for line in (res.run_dir / "log.jsonl").read_text().splitlines()]
    speed = rows[0]["speed"]
    on = [k for k, v in speed.items() if v is True]
    n = args.n_train
    print(
        f"{args.method}: student {args.student}, teacher {args.teacher}, batch "
        f"{args.batch_size}, {n} training images, device {speed['device']}"
    )
    print(f"speed features on: {', '.join(on) or 'none'}; amp {speed['amp']}; {speed['notes']}")
    for r in rows:
        print(f"epoch {r['epoch']}: {r['epoch_time_s']:.2f} s ({n / r['epoch_time_s']:.0f} img/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
