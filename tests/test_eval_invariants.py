"""Invariants of the evaluator, on fixtures where they can fail (issue 28, items 1 and 2).

1. The evaluator decides the model's mode: a network with BatchNorm and Dropout gives the same
   numbers whether it arrives in train or eval mode, its flags and buffers come back unchanged.
2. An attacked column never exceeds clean, point by point: a gradient-masking toy that is wrong
   on the exact 8-bit inputs but right a little off them scores 0 % under FGSM / PGD / CW / AA.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import Tensor, nn

from ardbench.eval.autoattack import load_aa_flags
from ardbench.eval.columns import per_point_start
from ardbench.eval.compliance import ComplianceWarning
from ardbench.eval.core import evaluate_model

ATTACKS = ("clean", "fgsm", "pgd20", "cw")


# ------------------------------------------------------------------------- 1. the model's mode


class BNDropNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Dropout(0.5) -> linear: train mode changes every output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _bn_drop_fixture() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = BNDropNet()
    # running statistics far from any batch's, so batch statistics (train mode) change outputs
    model.bn.running_mean.uniform_(-1.0, 1.0)
    model.bn.running_var.uniform_(0.2, 3.0)
    x = torch.randint(0, 256, (24, 3, 8, 8)).float() / 255
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # labels = eval-mode predictions: clean is 100 %
    return model, x, y


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_evaluator_decides_the_mode_bn_dropout():
    model, x, y = _bn_drop_fixture()
    with torch.no_grad():
        assert not torch.equal(model.train()(x).argmax(1), y), "fixture: train mode must differ"
    before = _state(model)
    results = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = evaluate_model(model, x, y, attacks=ATTACKS, eps=2 / 255, batch_size=8, seed=0)
        assert any(issubclass(w.category, ComplianceWarning) for w in caught) == (mode == "train")
        # the caller's mode comes back, on every submodule, and no buffer moved
        assert all(m.training == (mode == "train") for m in model.modules()), mode
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{mode}: state changed"
        results[mode] = r
    assert results["eval"].accuracy["clean"] == 1.0  # computed in eval mode
    assert results["train"].accuracy == results["eval"].accuracy
    assert results["train"].per_class == results["eval"].per_class
    assert results["train"].compliance["eval_mode"]["passed"] is False  # and it says so
    assert results["eval"].compliance["eval_mode"]["passed"] is True


# ----------------------------------------------------------- 2. attacked <= clean, point by point


class GridMasker(nn.Module):
    """10 classes by mean brightness (class k around (k + 0.5) / 10, a margin of 0.05 > eps),
    but the label moves one class on when every pixel lies on the 8-bit grid: wrong on the
    exact test images, right a little off them (where attacks with a random start stay).
    ``masked``: the classes on which the grid flips the answer (default all)."""

    def __init__(self, masked: tuple[int, ...] = tuple(range(10))) -> None:
        super().__init__()
        self.register_buffer("centres", (torch.arange(10).float() + 0.5) / 10)
        self.register_buffer("masked", torch.zeros(10, dtype=torch.bool))
        self.masked[list(masked)] = True

    def forward(self, x: Tensor) -> Tensor:
        mean = x.flatten(1).mean(1, keepdim=True)
        # shattered gradients: zero everywhere, so an attack stays where its random start put it
        # (off the grid); with real gradients PGD would walk to the ball's corners, on the grid
        base = -200.0 * (mean.detach() - self.centres) ** 2 + 0.0 * mean
        with torch.no_grad():
            off = (x * 255 - (x * 255).round()).abs().flatten(1).amax(1)
            on_grid = off < 1e-3
            flip = on_grid & self.masked[base.argmax(1)]
        return torch.where(flip[:, None], base.roll(1, dims=1), base)


def _grid_points(n: int = 20) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    level = ((y.float() + 0.5) / 10 * 255).round()
    noise = torch.randint(-3, 4, (n, 3, 6, 6), generator=g).float()
    x = (level[:, None, None, None] + noise).clamp(0, 255) / 255  # exact 8-bit values
    return x, y


def _point_flags(state_path, columns) -> dict[str, Tensor]:
    data = json.loads(state_path.read_text())
    return {c: torch.tensor(data["columns"][c]["correct"], dtype=torch.bool) for c in columns}


def test_fixture_is_a_gradient_masker():
    x, y = _grid_points()
    model = GridMasker().eval()
    with torch.no_grad():
        assert (model(x).argmax(1) != y).all()  # wrong on every exact input
        off = (x + 0.3 / 255).clamp(0, 1)
        assert (model(off).argmax(1) == y).all()  # right a little off them


def test_attacked_columns_never_exceed_clean_on_a_gradient_masker(tmp_path):
    x, y = _grid_points()
    state = tmp_path / "eval.json"
    r = evaluate_model(
        GridMasker().eval(),
        x,
        y,
        attacks=ATTACKS,
        eps=8 / 255,
        batch_size=8,
        seed=0,
        state_path=state,
    )
    assert r.accuracy == {c: 0.0 for c in ATTACKS}
    assert all(v == 0.0 for c in ATTACKS for v in r.per_class[c] if v is not None)


def test_attacked_le_clean_point_by_point_mixed(tmp_path):
    """Half the classes masked: clean is 50 %, every attacked column is exactly clean's points
    (the unmasked half is robust: its margin exceeds eps)."""
    x, y = _grid_points()
    state = tmp_path / "eval.json"
    r = evaluate_model(
        GridMasker(masked=(0, 2, 4, 6, 8)).eval(),
        x,
        y,
        attacks=ATTACKS,
        eps=8 / 255,
        batch_size=8,
        seed=0,
        state_path=state,
    )
    flags = _point_flags(state, ATTACKS)
    assert torch.equal(flags["clean"], y % 2 == 1)
    for c in ATTACKS[1:]:
        assert not (flags[c] & ~flags["clean"]).any(), f"{c}: a point robust but wrong clean"
        assert torch.equal(flags[c], flags["clean"]), c
        for pc, pclean in zip(r.per_class[c], r.per_class["clean"], strict=True):
            assert pc is None or pc <= pclean


def test_autoattack_scores_zero_on_a_gradient_masker():
    """AutoAttack's own clean pass counts a point wrong clean as broken."""
    x, y = _grid_points(10)
    r = evaluate_model(GridMasker().eval(), x, y, attacks=("clean", "aa"), eps=8 / 255, seed=0)
    assert r.accuracy == {"clean": 0.0, "aa": 0.0}


@pytest.mark.slow
def test_autoattack_le_clean_point_by_point_mixed(tmp_path):
    """Half the classes masked (about 5 s: Square's 5,000 queries on the robust half)."""
    x, y = _grid_points(10)
    state = tmp_path / "eval.json"
    r = evaluate_model(
        GridMasker(masked=(0, 2, 4, 6, 8)).eval(),
        x,
        y,
        attacks=("clean", "aa"),
        eps=8 / 255,
        seed=0,
        state_path=state,
        aa_batch_size=10,
    )
    clean = _point_flags(state, ("clean",))["clean"]
    aa = load_aa_flags(state.parent / f"{state.stem}.autoattack" / f"points-0-{len(y)}.json")
    assert aa is not None and not (aa & ~clean).any()
    assert r.accuracy["aa"] <= r.accuracy["clean"] == 0.5


# ------------------------------------------- found by planting bugs (tests/README.md, issue 28)


def test_random_starts_do_not_depend_on_where_a_batch_starts():
    """A point's PGD / CW start is the same in any batch, past the first block of 64 too."""
    x = torch.zeros(200, 3, 2, 2)
    whole = per_point_start(x, 8 / 255, "Linf", seed=3, column="pgd20", start=0)
    for b0, b1 in ((64, 100), (70, 130), (127, 200), (5, 190)):
        part = per_point_start(x[b0:b1], 8 / 255, "Linf", seed=3, column="pgd20", start=b0)
        assert torch.equal(part, whole[b0:b1]), (b0, b1)


def test_evaluation_leaves_the_global_rng_as_it_was():
    """AutoAttack reseeds torch's generator; the caller's random stream must not notice."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 10)).eval()
    x, _ = _grid_points(10)
    with torch.no_grad():
        y = model(x).argmax(1)  # clean 100 %: AutoAttack attacks (and seeds) for real
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    r = evaluate_model(model, x, y, attacks=("clean", "aa"), eps=0.25, seed=0)
    assert r.accuracy == {"clean": 1.0, "aa": 0.0}  # APGD-CE breaks every point: fast
    assert torch.equal(torch.rand(4), expected)
