"""Runs and records the plot tests share: a run folder with a hand-written epoch log, and a
record with given accuracies. A helper module, not a test module."""

from __future__ import annotations

import json

import ardbench
from ardbench.results.records import example_record


def fake_run(root, name, method, seed, kl_adv, pgd10):
    """A run directory with a real resolved config and a hand-written epoch log."""
    run = root / name
    run.mkdir(parents=True)
    cfg = ardbench.config(method=method, preset="demo", seed=seed)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    with (run / "log.jsonl").open("w") as fh:
        for epoch, (kl, acc) in enumerate(zip(kl_adv, pgd10, strict=True), 1):
            row = {
                "epoch": epoch,
                "lr": 0.1,
                "losses": {"kl_adv": kl, "loss": 2 * kl},
                "diagnostics": {},
                "probe": {"clean": 0.5, "pgd10": acc, "examples": 32, "split": "x"},
                "epoch_time_s": 1.0,
            }
            fh.write(json.dumps(row) + "\n")
    return ardbench.Run(run)


def plot_record(method, seed, clean, aa=None, **kw):
    """A record of ``method`` and ``seed`` with clean (and AA) accuracy, for the tables."""
    acc = {"clean": clean, "pgd20": clean / 2, **({"aa": aa} if aa is not None else {})}
    return example_record(
        run_id=f"{method}-s{seed}",
        seed=seed,
        method={"name": method, "config": {}, "config_hash": "2" * 16},
        recipe=f"baselines/{method}/standard.yaml",
        config={"method": method, "train": {"seed": seed, "epochs": 1}},
        eval={"accuracy": acc, "n_examples": 1000},  # clean / 2: whole points of 1000
        **kw,
    )
