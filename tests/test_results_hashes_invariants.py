"""Every file's hash is its own (issue 28, item 7).

Each sha256 a record holds (the reported checkpoint, the run's other checkpoint, the teacher) is
the sha256 of that file's bytes, computed here with hashlib, not with ardbench's helper; and
altering one file changes its hash alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import torch

from ardbench.models import build_arch, load_model
from ardbench.recipes import resolve_config
from ardbench.train.selection import Probe
from ardbench.train.trainer import save_models, train

SCRIPTED_PGD10 = [0.5, 0.25, 0.25]  # best-on-holdout picks epoch 1, unlike the last epoch


def sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_every_sha256_in_a_record_is_its_files(tiny_npz, teacher_file, tmp_path, monkeypatch):
    real_measure = Probe.measure
    count = {"n": 0}

    def measure(self, model):
        out = real_measure(self, model)
        out["pgd10"] = SCRIPTED_PGD10[count["n"]]
        count["n"] += 1
        return out

    monkeypatch.setattr(Probe, "measure", measure)
    cfg = resolve_config(
        "kd",
        cli={
            "dataset": f"npz:{tiny_npz}",
            "student": "small_cnn",
            "teacher": f"small_cnn:{teacher_file}",
            "train": {"epochs": 3},
        },
        sets=[
            "train.batch_size=16",
            "train.holdout=16",
            "checkpoint.rule=best-on-holdout",
            "eval.batch_size=16",
            "eval.attacks=clean",
            "eval.n_examples=8",
            "train.lr_schedule=constant",
            "train.lr=0.5",
        ],
    )
    record = train(cfg, runs_dir=tmp_path / "runs", progress=False).record
    assert record is not None
    files = {
        "checkpoint": (record["checkpoint"]["path"], record["checkpoint"]["sha256"]),
        "last": (record["checkpoints"]["last"]["path"], record["checkpoints"]["last"]["sha256"]),
        "teacher": (teacher_file, record["teacher"]["sha256"]),
    }
    assert Path(files["checkpoint"][0]).name == "model.pt"
    assert Path(files["last"][0]).name == "model-last.pt"
    for what, (path, recorded) in files.items():
        assert recorded == sha(path), what
    assert len({h for _, h in files.values()}) == 3  # three different files, three hashes


def _save(run_dir: Path, models: dict) -> dict:
    parts = SimpleNamespace(
        student=SimpleNamespace(arch="small_cnn"), dataset=SimpleNamespace(num_classes=10)
    )
    return save_models(run_dir, parts, models)  # type: ignore[arg-type]


def test_altering_one_checkpoint_changes_its_hash_alone(tmp_path):
    torch.manual_seed(0)
    best, last = build_arch("small_cnn", 10), build_arch("small_cnn", 10)
    models = {"best-on-holdout": (best, {"epoch": 1}), "last": (last, {"epoch": 2})}
    first = _save(tmp_path, models)
    for info in first.values():
        assert info["sha256"] == sha(info["path"])
    with torch.no_grad():
        next(last.parameters()).add_(1.0)
    second = _save(tmp_path, models)
    assert second["best-on-holdout"]["sha256"] == first["best-on-holdout"]["sha256"]
    assert second["last"]["sha256"] != first["last"]["sha256"]
    assert second["last"]["sha256"] == sha(second["last"]["path"])


def test_altering_one_model_file_changes_its_hash_alone(tmp_path):
    torch.manual_seed(0)
    paths = [tmp_path / f"net{i}.pt" for i in range(2)]
    for p in paths:
        torch.save(build_arch("small_cnn", 10).state_dict(), p)
    before = [load_model(f"small_cnn:{p}").sha256 for p in paths]
    assert before == [sha(p) for p in paths]
    state = torch.load(paths[1], weights_only=True)
    state["linear.bias"] += 1.0
    torch.save(state, paths[1])
    after = [load_model(f"small_cnn:{p}").sha256 for p in paths]
    assert after[0] == before[0] and after[1] != before[1] and after[1] == sha(paths[1])
