"""bf16 parity study: the same short runs with ``train.amp=none`` and ``train.amp=bf16``.

    OMP_NUM_THREADS=1 python benchmarks/bf16_parity.py                      # CPU, digits
    python benchmarks/bf16_parity.py --method rslad --teacher TEACHER_SPEC --dataset cifar10 \\
        --student resnet18 --epochs 30 --seeds 0,1,2 --device cuda --n-eval 10000

Each (seed, amp) pair is a full ``ardbench.train.trainer.train`` run (evaluation in fp32, as always);
the script prints clean and PGD-20 accuracy per run, the bf16 - fp32 difference per seed and
on average, and compares the average difference with the noise: the seed-to-seed standard
deviation of the fp32 runs and the binomial standard deviation of an accuracy on ``n`` points
(the larger of the two is sigma). "within noise" means |mean difference| <= 2 sigma. The
default is a tiny CPU-scale check (scikit-learn digits upsampled to 32x32, ``small_cnn``,
PGD-AT): it shows that bf16 training runs and does not break robustness at that scale, not that
it is safe for a CIFAR-10 reproduction; that needs the GPU-scale study.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ardbench.recipes import resolve_config
from ardbench.train.trainer import train


def run(args, seed: int, amp: str, runs_dir: Path) -> dict:
    cli = {
        "dataset": args.dataset,
        "student": args.student,
        "device": args.device,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": seed},
    }
    if args.teacher:
        cli["teacher"] = args.teacher
    sets = [
        f"attack.steps={args.attack_steps}",
        "train.lr_schedule=multistep",
        f"train.milestones=[{max(1, args.epochs - 2)}]",
        "train.weight_decay=5e-4",
        "eval.attacks=[clean,pgd20]",
        f"train.amp={amp}",
        *args.set,
    ]
    if args.n_eval:
        sets.append(f"eval.n_examples={args.n_eval}")
    cfg = resolve_config(args.method, cli=cli, sets=sets)
    t0 = time.perf_counter()
    res = train(cfg, runs_dir=runs_dir, progress=False)
    acc = res.record["eval"]["accuracy"]
    return {
        "seed": seed,
        "amp": amp,
        "clean": acc["clean"],
        "pgd20": acc["pgd20"],
        "n": res.record["eval"]["n_examples"],
        "train_s": res.record["wall_time_s"],
        "total_s": time.perf_counter() - t0,
        "run_id": res.run_id,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--method", default="pgd_at")
    p.add_argument("--teacher", default=None, help="teacher spec (distillation methods)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--student", default="small_cnn")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--attack-steps", type=int, default=5)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--n-eval", type=int, default=None, help="test points (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs-dir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="ardbench-bf16-"))

    rows = []
    for seed in seeds:
        for amp in ("none", "bf16"):
            r = run(args, seed, amp, runs_dir)
            rows.append(r)
            print(
                f"seed {seed} amp {amp:4}: clean {100 * r['clean']:6.2f}  pgd20 "
                f"{100 * r['pgd20']:6.2f}  (train {r['train_s']:.0f} s)",
                flush=True,
            )

    by = {(r["seed"], r["amp"]): r for r in rows}
    n = rows[0]["n"]
    print(
        f"\n{args.method}, {args.student} on {args.dataset}, {args.epochs} epochs, PGD-"
        f"{args.attack_steps} training attack, eval on {n} points (fp32), torch {torch.__version__}"
    )
    print(
        f"{'seed':>4} {'clean fp32':>10} {'clean bf16':>10} {'pgd20 fp32':>10} {'pgd20 bf16':>10}"
    )
    for s in seeds:
        a, b = by[(s, "none")], by[(s, "bf16")]
        print(
            f"{s:4d} {100 * a['clean']:10.2f} {100 * b['clean']:10.2f} "
            f"{100 * a['pgd20']:10.2f} {100 * b['pgd20']:10.2f}"
        )
    summary = {}
    for col in ("clean", "pgd20"):
        fp32 = [by[(s, "none")][col] for s in seeds]
        bf16 = [by[(s, "bf16")][col] for s in seeds]
        diffs = [b - a for a, b in zip(fp32, bf16, strict=True)]
        mean_d = statistics.fmean(diffs)
        seed_sd = statistics.stdev(fp32) if len(fp32) > 1 else 0.0
        p_hat = statistics.fmean(fp32)
        binom_sd = math.sqrt(max(p_hat * (1 - p_hat), 1e-12) / n)
        sigma = max(seed_sd, binom_sd)
        within = abs(mean_d) <= 2 * sigma
        summary[col] = {
            "fp32_mean": p_hat,
            "bf16_mean": statistics.fmean(bf16),
            "mean_diff": mean_d,
            "seed_sd_fp32": seed_sd,
            "binomial_sd": binom_sd,
            "sigma": sigma,
            "within_noise": within,
        }
        print(
            f"{col}: fp32 {100 * p_hat:.2f}, bf16 {100 * statistics.fmean(bf16):.2f}, "
            f"mean bf16 - fp32 {100 * mean_d:+.2f} pp; sigma {100 * sigma:.2f} pp (seed sd "
            f"{100 * seed_sd:.2f}, binomial {100 * binom_sd:.2f}) -> "
            f"{'within' if within else 'OUTSIDE'} noise (2 sigma)"
        )
    t_fp32 = statistics.fmean(by[(s, "none")]["train_s"] for s in seeds)
    t_bf16 = statistics.fmean(by[(s, "bf16")]["train_s"] for s in seeds)
    print(f"training time: fp32 {t_fp32:.0f} s, bf16 {t_bf16:.0f} s per run (mean)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"runs_dir": str(runs_dir), "json": None},
                    "rows": rows,
                    "summary": summary,
                },
                indent=2,
                default=str,
            )  # fmt: skip
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
