"""The teacher check and the augmentation it measures (issue 16).

The check must catch a teacher that is right on plain training images but wrong on them as
the loader augments them, and one that is near chance; its figures go into the record; under
``train.teacher_check: strict`` a failing teacher stops the run before anything is written.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ardbench.cli import main
from ardbench.data.loader import DeviceLoader, augment_batch
from ardbench.errors import ConfigError
from ardbench.models import build_arch
from ardbench.protocols import TrainConfig, get_protocol, identity_of
from ardbench.recipes import resolve_config
from ardbench.results.records import validate_record
from ardbench.train.setup import TrainingError
from ardbench.train.teacher_check import check_teacher, describe_augmentation
from ardbench.train.trainer import train

# ---------------------------------------------------------------------------- augmentation


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_reflect_crop_matches_a_padded_slice():
    x = _images()
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7], [6, 2], [3, 5]])
    flips = torch.tensor([False, True, False, True, False, False])
    out = augment_batch(x, offsets, flips, crop="reflect")
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    for i, (top, left) in enumerate(offsets.tolist()):
        want = padded[i, :, top : top + 32, left : left + 32]
        if flips[i]:
            want = want.flip(-1)
        assert torch.equal(out[i], want), i
    # a reflected border never holds the zero fill of the zero-padded crop
    zero = augment_batch(x, offsets, flips, crop="zero")
    assert (zero[0, :, :4, :4] == 0).all() and not (out[0, :, :4, :4] == 0).all()
    assert out.dtype == torch.uint8


def test_no_crop_and_no_flip_leave_images_alone():
    x = _images()
    offsets = torch.randint(0, 9, (6, 2))
    flips = torch.ones(6, dtype=torch.bool)
    assert torch.equal(augment_batch(x, offsets, flips, crop="none", flip=False), x)
    assert torch.equal(augment_batch(x, offsets, flips, crop="none"), x.flip(-1))
    with pytest.raises(ValueError, match="crop must be"):
        augment_batch(x, offsets, flips, crop="mirror")


@pytest.mark.parametrize("crop", ["zero", "reflect", "none"])
def test_epoch_head_is_what_the_epoch_feeds(crop):
    x, y = _images(40), torch.arange(40) % 10
    loader = DeviceLoader(x, y, batch_size=8, seed=3, augment=True, crop=crop)
    seen, plain, labels = loader.epoch_head(2, 12)
    xs, ys, order = loader.epoch_data(2)
    assert torch.equal(seen, xs[:12]) and torch.equal(labels, ys[:12])
    assert torch.equal(plain, x[order[:12]])
    # the crop and flip change the images, never the order of the epoch
    other = DeviceLoader(x, y, batch_size=8, seed=3, augment=True, crop="zero", flip=False)
    assert torch.equal(other.epoch_data(2)[2], order)


def test_augmentation_keys_validated_and_hashed():
    with pytest.raises(ConfigError, match="train.crop must be one of zero, reflect, none"):
        TrainConfig(crop="reflection")
    with pytest.raises(ConfigError, match="teacher_check"):
        TrainConfig(teacher_check="loud")
    base = get_protocol("cifar10-exact-linf2").sections()
    ident = identity_of(base)
    # the keys added with the default that reproduces older runs keep older identities
    explicit = {**base, "train": {**base["train"], "crop": "zero", "flip": True}}
    assert identity_of(explicit) == ident
    reflect = {**base, "train": {**base["train"], "crop": "reflect"}}
    assert identity_of(reflect) != ident
    off = {**base, "train": {**base["train"], "augment": False}}
    off_reflect = {**base, "train": {**base["train"], "augment": False, "crop": "reflect"}}
    assert identity_of(off) == identity_of(off_reflect) != ident
    # what a failed check does is not part of what a run computes
    strict = {**base, "train": {**base["train"], "teacher_check": "strict"}}
    assert identity_of(strict) == ident


def test_small_track_protocols():
    old, new = get_protocol("cifar10-exact-linf2"), get_protocol("cifar10-exact-linf2-flip")
    assert (old.train.crop, old.train.flip) == ("zero", True)
    assert (new.train.crop, new.train.flip) == ("none", True)
    assert "cifar10-exact-linf2-flip" in old.retired and not new.retired
    assert old.identity() != new.identity()
    assert describe_augmentation(True, "none", True) == "flip"
    assert describe_augmentation(False, "zero", True) == "no augmentation"


# ---------------------------------------------------------------------------- the check


class Memoriser(nn.Module):
    """Right on exactly the images it was given, class 0 on anything else: a teacher that was
    never trained on the augmentation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int = 10):
        super().__init__()
        self.keys = x.float().div(255).flatten(1)
        self.y, self.k = y, num_classes

    def forward(self, x):
        d = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        hit = d.min(1).values < 1e-4
        label = torch.where(hit, self.y[d.argmin(1)], torch.zeros_like(self.y[:1]))
        return F.one_hot(label, self.k).float()


def _spread_labels(n):
    return torch.arange(n) % 10


def test_check_warns_on_a_teacher_that_never_saw_the_crop():
    x, y = _images(200), _spread_labels(200)
    teacher = Memoriser(x, y)
    loader = DeviceLoader(x, y, batch_size=32, seed=0, augment=True, crop="zero")
    chk = check_teacher(teacher, loader, x[:50], y[:50], num_classes=10, n=100)
    assert chk.unaugmented == 100.0 and chk.test == 100.0 and chk.n_train == 100
    assert chk.augmented < 20.0  # only the few uncropped, unflipped draws are recognised
    assert (
        chk.warnings and "less accurate on the inputs as the students see them" in (chk.warnings[0])
    )
    assert "zero-padded random crop + flip" == chk.augmentation
    plain = DeviceLoader(x, y, batch_size=32, seed=0, augment=False)
    ok = check_teacher(teacher, plain, x[:50], y[:50], num_classes=10, n=100)
    assert ok.ok and ok.augmented == ok.unaugmented == 100.0


def test_check_warns_near_chance():
    x, y = _images(64), _spread_labels(64)

    class Constant(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 1.0)

    loader = DeviceLoader(x, y, batch_size=32, seed=0, augment=True, crop="none", flip=False)
    chk = check_teacher(Constant(), loader, None, None, num_classes=10)
    assert chk.test is None and chk.n_test == 0
    assert chk.augmented == chk.unaugmented == pytest.approx(100 * 7 / 64, abs=0.01)
    assert len(chk.warnings) == 1 and "near chance" in chk.warnings[0]


def test_check_restores_the_mode_and_reads_no_gradients():
    x, y = _images(16), _spread_labels(16)
    model = build_arch("small_cnn", 10).train()
    loader = DeviceLoader(x, y, batch_size=8, seed=0, augment=True)
    check_teacher(model, loader, x, y, num_classes=10)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------- in a run


@pytest.fixture
def random_teacher(teacher_file):
    return f"small_cnn:{teacher_file}"


def _cfg(tiny_npz, teacher, *sets):
    return resolve_config(
        "kd",
        cli={
            "dataset": f"npz:{tiny_npz}",
            "student": "small_cnn",
            "teacher": teacher,
            "train": {"epochs": 1},
        },
        sets=["train.batch_size=16", "eval.attacks=clean", "eval.batch_size=16", *sets],
    )


def test_run_records_the_check(tiny_npz, random_teacher, tmp_path):
    result = train(_cfg(tiny_npz, random_teacher), runs_dir=tmp_path / "runs", progress=False)
    check = result.record["teacher"]["check"]
    assert check["n_train"] == 48 and check["n_test"] == 16
    assert check["augmentation"] == "zero-padded random crop + flip"
    assert set(check) >= {"augmented", "unaugmented", "test", "chance", "warnings"}
    validate_record(result.record)
    on_disk = json.loads((result.run_dir / "record.json").read_text())
    assert on_disk["teacher"]["check"] == check
    bad = json.loads(json.dumps(result.record))
    bad["teacher"]["check"]["augmented"] = 140.0
    with pytest.raises(Exception, match="augmented"):
        validate_record(bad)


def test_strict_refuses_a_failing_teacher_before_writing(tiny_npz, random_teacher, tmp_path):
    runs = tmp_path / "runs"
    cfg = _cfg(tiny_npz, random_teacher, "train.teacher_check=strict")
    with pytest.raises(TrainingError, match="teacher check failed"):
        train(cfg, runs_dir=runs, progress=False)
    assert not runs.exists() or not any(runs.iterdir())
    off = train(
        _cfg(tiny_npz, random_teacher, "train.teacher_check=skip"), runs_dir=runs, progress=False
    )
    assert "check" not in off.record["teacher"]
    assert (
        off.record["method"]["config_hash"]
        == (
            train(_cfg(tiny_npz, random_teacher), runs_dir=runs, progress=False).record["method"][
                "config_hash"
            ]
        )
    )


def test_cli_check_teacher(tiny_npz, random_teacher, tmp_path, capsys):
    out = tmp_path / "check.json"
    args = ["check-teacher", random_teacher, "--dataset", f"npz:{tiny_npz}", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "as the students see them" in text and "near chance" in " ".join(text.split())
    data = json.loads(out.read_text())
    assert data["teacher"] == random_teacher and data["n_train"] == 48
    assert main([*args, "--strict"]) == 1
    assert main([*args, "--set", "train.crop=sideways"]) == 2
    capsys.readouterr()
    # ardbench run --strict is train.teacher_check=strict
    runs = tmp_path / "runs"
    rc = main(
        [
            "run",
            "--method",
            "kd",
            "--dataset",
            f"npz:{tiny_npz}",
            "--teacher",
            random_teacher,
            "--student",
            "small_cnn",
            "--epochs",
            "1",
            "--runs",
            str(runs),
            "--strict",
            "--quiet",
        ]
    )
    assert rc == 2 and "teacher check failed" in " ".join(capsys.readouterr().err.split())
    assert not runs.exists() or not any(runs.iterdir())


def _record(seed: int = 0, check: dict | None = None, teacher: bool = True) -> object:
    """A typed record of ``seed`` with a teacher (its ``check`` when given) or without one."""
    from ardbench.results.records import as_record, example_record

    block = {"spec": "t.pt2", **({"check": check} if check else {})} if teacher else None
    return as_record(
        example_record(seed=seed, config={"train": {"seed": seed, "epochs": 1}}, teacher=block)
    )


def test_leaderboard_states_the_check():
    from ardbench.results.render import _teacher_check_text

    chk = {
        "augmentation": "flip",
        "n_train": 2048,
        "augmented": 80.27,
        "unaugmented": 80.86,
        "n_test": 1017,
        "test": 77.29,
        "chance": 10.0,
        "warnings": [],
    }
    with_check = _record(0, check=chk)
    old = _record(0)
    text = _teacher_check_text([with_check, with_check])
    assert "seed 0: 80.27 % on 2048 training inputs as the students see them (flip)" in text
    assert "77.29 % on 1017 test points" in text and "warned" not in text
    # another seed draws other epoch-0 images: its figures are listed under its own seeds
    other = _record(2, check={**chk, "augmented": 82.03})
    again = _record(1, check=chk)
    text = _teacher_check_text([other, with_check, again])
    assert text.index("seeds 0, 1: 80.27 %") < text.index("seed 2: 82.03 %")
    warned = _record(0, check={**chk, "warnings": ["x"]})
    assert "It warned in 1 of 2 runs" in _teacher_check_text([with_check, warned])
    assert "1 runs predate" in _teacher_check_text([with_check, old])
    assert "not recorded" in _teacher_check_text([old])
    assert _teacher_check_text([_record(0, teacher=False)]) == ""


def test_the_retired_track_says_so_in_its_tables():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "leaderboard"
    index = (root / "README.md").read_text()
    assert "| cifar10-exact-linf2 (retired) |" in index
    table = next((root / "cifar10-exact-linf2").glob("*.md")).read_text()
    assert "**Retired**: it misleads" in table and "62.8 %" in table
