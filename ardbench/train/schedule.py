"""Learning-rate schedules, as the official codes compute them (quirks included)."""

from __future__ import annotations

import math

from ..protocols import TrainConfig


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based ``epoch`` (set once at the start of the epoch, as the codes do)."""
    base, E = cfg.lr, cfg.epochs
    if cfg.lr_schedule == "constant":
        return base
    if cfg.lr_schedule == "multistep":
        return base * cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    if cfg.lr_schedule == "ard_as_coded":
        # adjust_learning_rate(optimizer, epoch, args.lr) sets lr = args.lr * 0.1 whenever
        # epoch is a milestone, always from the *initial* lr: one decay, whatever the list.
        return base * cfg.gamma if any(epoch >= m for m in cfg.milestones) else base
    if cfg.lr_schedule == "piecewise_epoch_plus_one":
        e = epoch + 1  # IAD pre_train calls the schedule with epoch + 1: decays land early
        if e < 0.5 * E:
            return base
        return base * cfg.gamma if e < 0.75 * E else base * cfg.gamma**2
    if cfg.lr_schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * epoch / E))
    raise ValueError(cfg.lr_schedule)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)
