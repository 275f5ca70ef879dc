"""Inputs for the site tests: the committed leaderboard's records, plus two tiny real runs (with
their log.jsonl; one verified) and a record whose text tries to inject markup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ardbench.models import build_arch
from ardbench.recipes import resolve_config
from ardbench.results.records import load_record, record_bytes
from ardbench.results.verify import claim_digest
from ardbench.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "leaderboard" / "runs"
HOSTILE_RUN = "hostile-small_cnn-s7-20260101-000000-abcd"
EVIL = '<script>alert(1)</script>"><img src=nowhere onerror=alert(2)>'


def tiny_runs(folder: Path) -> list[Path]:
    """Two 2-epoch KD runs (seeds 0, 1) on 48 images; their run directories."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 48)
    x = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    x = (x // 4 + (y[:, None, None, None] * 20)).astype(np.uint8)
    np.savez(folder / "tiny.npz", x_train=x, y_train=y, x_test=x[:16], y_test=y[:16])
    torch.manual_seed(1)
    torch.save(build_arch("small_cnn", 10).state_dict(), folder / "teacher.pt")
    out = []
    for seed in (0, 1):
        cfg = resolve_config(
            "kd",
            cli={
                "dataset": f"npz:{folder / 'tiny.npz'}",
                "student": "small_cnn",
                "teacher": f"small_cnn:{folder / 'teacher.pt'}",
                "train": {"epochs": 2},
            },
            sets=[
                "train.batch_size=16",
                "attack.steps=2",
                "eval.batch_size=16",
                "eval.attacks=clean,pgd20",
                "train.milestones=[1]",
                "train.lr_schedule=multistep",
                f"train.seed={seed}",
                "train.probe=16",
            ],
        )
        out.append(train(cfg, runs_dir=folder / "runs", progress=False).run_dir)
    return out


def hostile_record(source: Path) -> dict:
    """A copy of a committed record whose free text is markup and a script."""
    record = load_record(source).to_dict()
    record["run_id"] = HOSTILE_RUN
    record["seed"] = 7
    record["config"]["train"]["seed"] = 7
    record["recipe"] = EVIL
    record["teacher"]["spec"] = EVIL
    # the tag is a closed set (records refuse another): the free text is the source
    record["paper"] = {"source": "[x](javascript:alert(3)) " + EVIL, "tag": "relayed", "aa": 50.0}
    return record


def site_inputs(folder: Path) -> Path:
    """A records folder: the committed records, the tiny runs (record.json + log.jsonl in
    their run directories, the first verified) and the hostile record."""
    runs = folder / "records"
    shutil.copytree(COMMITTED, runs)
    for run_dir in tiny_runs(folder / "tiny"):
        shutil.copytree(
            run_dir,
            runs / "tiny" / run_dir.name,
            ignore=shutil.ignore_patterns("*.pt", "*.safetensors"),
        )
    first = sorted((runs / "tiny").iterdir())[0]
    record = json.loads((first / "record.json").read_text())
    result = {"state": "verified", "note": "re-evaluated", "run_id": record["run_id"]}
    (first / "verify.json").write_text(
        json.dumps({**result, "record_digest": claim_digest(record)})
    )
    source = next(
        p
        for p in sorted(COMMITTED.rglob("rslad-small_cnn-s0-*.json"))
        if p.name.count(".") == 1  # not .eval.json / .verify.json
    )
    (runs / "hostile.json").write_bytes(record_bytes(hostile_record(source)))
    return runs
