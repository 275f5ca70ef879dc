from __future__ import annotations

import json

import pytest
import torch
from stepkit import tiny_cfg

from ardbench.protocols import TrainConfig
from ardbench.train.schedule import lr_at
from ardbench.train.trainer import TrainingError, resume, train


def test_lr_schedules():
    ard = TrainConfig(epochs=200, lr_schedule="ard_as_coded", milestones=(100, 150))
    assert [lr_at(e, ard) for e in (99, 100, 150, 199)] == pytest.approx([0.1, 0.01, 0.01, 0.01])
    ms = TrainConfig(epochs=200, lr_schedule="multistep", milestones=(100, 150))
    assert [lr_at(e, ms) for e in (99, 100, 150)] == pytest.approx([0.1, 0.01, 0.001])
    pw = TrainConfig(epochs=200, lr_schedule="piecewise_epoch_plus_one")
    assert [lr_at(e, pw) for e in (98, 99, 148, 149)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    cos = TrainConfig(epochs=10, lr_schedule="cosine")
    assert lr_at(0, cos) == pytest.approx(0.1) and lr_at(5, cos) == pytest.approx(0.05)


def test_run_writes_log_checkpoint_model_record(tiny_npz, teacher_file, tmp_path):
    cfg = tiny_cfg("kd", tiny_npz, teacher_file, epochs=2)
    res = train(cfg, runs_dir=tmp_path / "runs", progress=False)
    assert res.completed
    d = res.run_dir
    for name in (
        "config.json",
        "log.jsonl",
        "checkpoint.pt",
        "model.pt",
        "model.json",
        "record.json",
    ):
        assert (d / name).is_file(), name
    log = [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert set(log[0]["losses"]) == {"kl_nat", "ce_nat", "loss"}
    rec = json.loads((d / "record.json").read_text())
    from ardbench.results.records import SCHEMA_VERSION

    assert rec["schema_version"] == SCHEMA_VERSION
    assert rec["teacher"]["sha256"] and len(rec["teacher"]["sha256"]) == 64
    assert set(rec["eval"]["accuracy"]) == {"clean", "pgd20"}
    assert rec["track"]["data_fingerprint"]
    # the site's cost columns: throughput and the process's peak memory (CPU: max RSS)
    assert rec["hardware"]["peak_memory_mb"] > 10 and rec["hardware"]["train_images_per_s"] > 0
    assert json.loads((d / "config.json").read_text())["method"] == "kd"


def test_resume_gives_the_same_weights(tiny_npz, tmp_path):
    cfg = tiny_cfg("trades", tiny_npz, epochs=3)
    full = train(cfg, runs_dir=tmp_path / "a", progress=False)
    part = train(cfg, runs_dir=tmp_path / "b", progress=False, stop_after_epoch=2)
    assert not part.completed and not (part.run_dir / "record.json").exists()
    done = resume(part.run_dir, progress=False)
    a = torch.load(full.run_dir / "model.pt", weights_only=True)
    b = torch.load(done.run_dir / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.record["eval"]["accuracy"] == done.record["eval"]["accuracy"]
    log = [json.loads(x) for x in (done.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_attack_student_mode_train_moves_bn_stats(tiny_npz, tmp_path):
    """student_mode=train: attack forwards update BN running statistics (ARD/IAD); eval: not."""
    from ardbench.attacks import ce_objective
    from ardbench.protocols import AttackConfig
    from ardbench.train.check import TinyNet
    from ardbench.train.step import make_attack_fn

    for mode, moved in (("train", True), ("eval", False)):
        net = TinyNet().train()
        before = net.bn.running_mean.clone()
        fn = make_attack_fn(net, AttackConfig(steps=2, student_mode=mode))
        fn(torch.rand(4, 3, 8, 8), ce_objective(net, torch.zeros(4, dtype=torch.long)))
        assert net.training  # restored
        assert (not torch.equal(before, net.bn.running_mean)) == moved


def test_missing_teacher_is_a_clear_error(tiny_npz, tmp_path):
    cfg = tiny_cfg("kd", tiny_npz, None, epochs=1)
    with pytest.raises(TrainingError, match="--teacher"):
        train(cfg, runs_dir=tmp_path, progress=False)


def test_resume_refuses_finished_run(tiny_npz, tmp_path):
    res = train(tiny_cfg("natural", tiny_npz, epochs=1), runs_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="already finished"):
        resume(res.run_dir)


def test_holdout_evaluates_on_held_out_training_examples(tiny_npz, tmp_path):
    cfg = tiny_cfg("natural", tiny_npz, epochs=1, **{"train.holdout": 16})
    res = train(cfg, runs_dir=tmp_path, progress=False)
    ev = res.record["eval"]
    assert ev["n_examples"] == 16 and ev["split"].startswith("holdout")
    with pytest.raises(TrainingError, match="leaves no training data"):
        train(
            tiny_cfg("natural", tiny_npz, epochs=1, **{"train.holdout": 48}),
            runs_dir=tmp_path,
            progress=False,
        )
