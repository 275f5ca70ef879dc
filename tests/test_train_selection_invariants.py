"""Selection never sees the test set (issue 28, item 3), on a fixture where it could.

- The holdout is carved from the training arrays: the probe's images are the last
  ``train.holdout`` training images (what the record says), and the loader trains on the rest.
- The chosen epoch is the one with the best holdout PGD-10 score in the log (ties: the later
  epoch), its weights are that epoch's, and the record states which epoch it chose.
- The test arrays are not read until the final evaluation: the fixture's test set raises when
  read earlier (its count, shape and label range are metadata, kept readable).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
import torch

import ardbench.train.setup as setup_mod
import ardbench.train.trainer as trainer_mod
from ardbench.data import Dataset, load_dataset
from ardbench.recipes import resolve_config
from ardbench.train.selection import BestOnHoldout, Probe
from ardbench.train.trainer import train

HOLDOUT = 16
SCRIPTED_PGD10 = [0.5, 0.5, 0.25]  # best 0.5 at epochs 1 and 2: the later, 2, wins


class EarlyTestRead(AssertionError):
    pass


@dataclasses.dataclass
class GuardedTest(Dataset):
    """A dataset whose test arrays raise while ``locked`` (set once it is built)."""

    locked: bool = False

    def __getattribute__(self, name: str) -> Any:
        if name in ("x_test", "y_test") and object.__getattribute__(self, "locked"):
            raise EarlyTestRead(f"{name} read before the final evaluation")
        return super().__getattribute__(name)

    # metadata, not the test points: prepare() checks the count and the label range
    @property
    def num_test(self) -> int:
        return int(self._n_test)

    @property
    def max_label(self) -> int:
        return int(self._max_label)


def _guarded(ds: Dataset) -> GuardedTest:
    g = GuardedTest(**{f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)})
    g._n_test, g._max_label = ds.num_test, ds.max_label
    g.locked = True
    return g


@pytest.fixture
def split_npz(tmp_path):
    """48 training images (brightness encodes the class) and 16 *other* test images."""
    rng = np.random.default_rng(3)

    def images(y):
        x = rng.integers(0, 64, (len(y), 32, 32, 3))
        return (x + y[:, None, None, None] * 19).astype(np.uint8)

    y_train, y_test = rng.integers(0, 10, 48), rng.integers(0, 10, 16)
    path = tmp_path / "split.npz"
    np.savez(path, x_train=images(y_train), y_train=y_train, x_test=images(y_test), y_test=y_test)
    return path


def _cfg(npz, epochs=3):
    return resolve_config(
        "natural",
        cli={"dataset": f"npz:{npz}", "student": "small_cnn", "train": {"epochs": epochs}},
        sets=[
            "train.batch_size=16",
            f"train.holdout={HOLDOUT}",
            "checkpoint.rule=best-on-holdout",
            "attack.steps=2",
            "eval.batch_size=16",
            "eval.attacks=clean,pgd20",
            "train.lr_schedule=constant",
        ],
    )


def test_best_on_holdout_takes_the_best_epoch_ties_later():
    best, net = BestOnHoldout(), torch.nn.Linear(2, 2)
    states = []
    for epoch, score in enumerate(SCRIPTED_PGD10):
        with torch.no_grad():
            net.weight.fill_(float(epoch))
        states.append(net.weight.clone())
        best.observe(epoch, {"pgd10": score, "clean": 1.0}, net)
    assert best.best is not None and best.best["epoch"] == 2
    assert torch.equal(best.best["state"]["weight"], states[1])


def test_selection_never_sees_the_test_set(split_npz, tmp_path, monkeypatch):
    ds = load_dataset(f"npz:{split_npz}")
    guarded = _guarded(ds)
    monkeypatch.setattr(setup_mod, "load_dataset", lambda *a, **k: guarded)

    seen: dict[str, Any] = {}
    real_loader = setup_mod.DeviceLoader

    def loader(x, y, **kw):
        seen["train_x"] = x
        return real_loader(x, y, **kw)

    monkeypatch.setattr(setup_mod, "DeviceLoader", loader)

    real_measure = Probe.measure

    def measure(self, model):  # the real probe, its PGD-10 score scripted to make a tie
        seen["probe_x"] = self.x
        out = real_measure(self, model)
        out["pgd10"] = SCRIPTED_PGD10[len(seen.setdefault("epochs", []))]
        return out

    monkeypatch.setattr(Probe, "measure", measure)

    def on_epoch(run_dir, row):  # each epoch's weights, from the checkpoint just written
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        seen["epochs"].append({k: v.clone() for k, v in state["student"].items()})

    real_eval = trainer_mod.evaluate_models

    def final_evaluation(parts, models, progress):
        seen["epochs_done"] = len(seen["epochs"])
        guarded.locked = False  # only now
        return real_eval(parts, models, progress)

    monkeypatch.setattr(trainer_mod, "evaluate_models", final_evaluation)

    res = train(_cfg(split_npz), runs_dir=tmp_path / "runs", progress=False, on_epoch=on_epoch)
    assert seen["epochs_done"] == 3

    # the holdout is the last HOLDOUT training images, and only the rest is trained on
    x_train = ds.x_train
    assert torch.equal(seen["probe_x"].cpu(), x_train[-HOLDOUT:].float() / 255)
    assert torch.equal(seen["train_x"], x_train[:-HOLDOUT])

    # the chosen epoch is the best in the log, ties to the later one, and its weights are that
    # epoch's
    log = [json.loads(line) for line in (res.run_dir / "log.jsonl").read_text().splitlines()]
    scores = [row["probe"]["pgd10"] for row in log]
    assert scores == SCRIPTED_PGD10
    assert all(row["probe"]["split"] == f"holdout ({HOLDOUT} training examples)" for row in log)
    best = max(range(len(scores)), key=lambda i: (scores[i], i)) + 1
    record = res.record
    assert record is not None and record["checkpoint_rule"] == "best-on-holdout"
    assert record["checkpoint"]["epoch"] == best == 2
    assert "later" in record["checkpoint"]["ties"]
    chosen = torch.load(res.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(chosen[k], seen["epochs"][best - 1][k]) for k in chosen)
    last = torch.load(res.run_dir / "model-last.pt", weights_only=True)
    assert any(not torch.equal(last[k], chosen[k]) for k in chosen)
    # and the final evaluation ran on the test points
    assert record["eval"]["split"] == "test" and record["eval"]["n_examples"] == 16


def test_guard_raises_on_an_early_read(split_npz):
    guarded = _guarded(load_dataset(f"npz:{split_npz}"))
    assert guarded.num_test == 16 and guarded.max_label <= 9
    with pytest.raises(EarlyTestRead):
        guarded.test_subset(4)


def test_holdout_does_not_depend_on_train_subset(split_npz):
    """The holdout is the last training images whatever ``train.train_subset`` keeps of the
    rest (a sweep over subset sizes selects on one holdout), and the two never overlap."""
    ds = load_dataset(f"npz:{split_npz}")
    for subset in (None, 8, 20):
        sets = {"train.holdout": HOLDOUT, "train.train_subset": subset}
        cfg = resolve_config(
            "natural",
            cli={"dataset": f"npz:{split_npz}"},
            sets=[f"{k}={v}" for k, v in sets.items() if v is not None],
        )
        split = setup_mod.split_train(ds, cfg)
        assert split.x_hold is not None and split.y_hold is not None
        assert torch.equal(split.x_hold, ds.x_train[-HOLDOUT:])
        assert torch.equal(split.y_hold, ds.y_train[-HOLDOUT:])
        kept = len(ds.x_train) - HOLDOUT if subset is None else subset
        assert torch.equal(split.x, ds.x_train[:kept])
