"""The evaluator: columns, AutoAttack breakdown, compliance checks, resume, JSON / model_info."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ardbench.eval.columns as columns
import ardbench.eval.core as core
import ardbench.eval.runners as runners
import ardbench.eval.state as eval_state
from ardbench.cli import main
from ardbench.eval import (
    AA_ATTACKS,
    ComplianceWarning,
    EvalResult,
    adversarial_examples,
    evaluate_model,
    evaluate_spec,
    model_info,
    parse_attacks,
    robustbench_cross_check,
)
from ardbench.eval.compliance import CHECKS, ComplianceError, run_compliance_checks
from ardbench.eval.modelinfo import PLACEHOLDER

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PCT = re.compile(r"^\d{1,3}\.\d{2}$")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a shared, loaded CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ tiny models


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()


def _conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    ).eval()


def _points(model: nn.Module, n: int, seed: int = 1, wrong: int = 2):
    """n points in [0,1] labelled by the model itself, except the first ``wrong`` ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:wrong] = (y[:wrong] + 1) % 10
    return x, y


class _Softmax(nn.Module):
    def forward(self, z):
        return z.softmax(1)


class _Noise(nn.Module):
    def forward(self, z):
        return z + 0.5 * torch.randn_like(z)


class _Round(nn.Module):
    """Quantises the input to 8 bits: zero gradient almost everywhere (gradient masking)."""

    def forward(self, x):
        return torch.round(x * 255) / 255


class _Detach(nn.Module):
    def forward(self, x):
        return x.detach()


def _violator(kind: str) -> nn.Module:
    torch.manual_seed(0)
    lin = nn.Linear(3 * 8 * 8, 10)
    if kind == "dropout_train":
        m = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), lin).eval()
        m[1].train()  # the classic slip: one submodule left in train mode
        return m
    if kind == "softmax":
        return nn.Sequential(nn.Flatten(), lin, _Softmax()).eval()
    if kind == "randomized":
        return nn.Sequential(nn.Flatten(), lin, _Noise()).eval()
    if kind == "rounding":
        return nn.Sequential(_Round(), nn.Flatten(), lin).eval()
    if kind == "detach":
        return nn.Sequential(_Detach(), nn.Flatten(), lin).eval()
    if kind == "fp64":
        return nn.Sequential(nn.Flatten(), lin).double().eval()
    raise AssertionError(kind)


# ------------------------------------------------------------------------------ AutoAttack


@pytest.fixture(scope="module")
def aa_result():
    """AutoAttack standard on 10 points of a tiny linear model (eps chosen so some points survive
    every attack: all four attacks then run on at least one point)."""
    model = _linear()
    x, y = _points(model, 10)
    r = evaluate_model(
        model,
        x,
        y,
        attacks="clean,fgsm,pgd20,cw,aa",
        eps=2 / 255,
        batch_size=8,
        aa_batch_size=8,
        seed=0,
    )
    return model, x, y, r


def test_aa_breakdown_all_four_attacks_run(aa_result):
    _, _, _, r = aa_result
    assert list(r.aa_breakdown) == list(AA_ATTACKS)
    values = list(r.aa_breakdown.values())
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # non-increasing
    assert values[0] <= r.accuracy["clean"]
    assert values[-1] == pytest.approx(r.accuracy["aa"])
    attacked = r.settings["aa"]["points_attacked"]
    assert all(attacked[a] >= 1 for a in AA_ATTACKS), attacked
    assert r.accuracy["aa"] <= min(r.accuracy[c] for c in ("clean", "fgsm", "pgd20", "cw")) + 0.11
    assert 0 < r.accuracy["aa"] <= r.accuracy["clean"] <= 1
    assert r.settings["aa"]["version"] == "standard" and r.settings["aa"]["seed"] == 0


def test_aa_equals_direct_pyautoattack_call(aa_result):
    from ardbench._compat import import_autoattack

    model, x, y, r = aa_result
    aa = import_autoattack()
    adversary = aa.AutoAttack(model, norm="Linf", eps=2 / 255, version="standard", seed=0)
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=8)
    assert r.accuracy["aa"] == int((y_adv == y).sum()) / len(y)


def test_evaluation_restores_model_mode_and_rng(aa_result):
    model = _conv()
    model.train()
    x, y = _points(model, 6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with pytest.warns(ComplianceWarning, match="eval_mode"):
        r = evaluate_model(model, x, y, attacks="pgd20", eps=8 / 255, batch_size=4)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert model.training and all(m.training for m in model.modules())
    assert any("eval_mode" in w for w in r.warnings)
    assert r.compliance["eval_mode"]["passed"] is False


# ------------------------------------------------------------------------------ compliance


@pytest.mark.parametrize(
    "kind, check",
    [
        ("dropout_train", "eval_mode"),
        ("softmax", "logits"),
        ("randomized", "deterministic"),
        ("rounding", "gradients"),
        ("detach", "gradients"),
        ("fp64", "fp32"),
    ],
)
def test_compliance_check_fires(kind, check):
    model = _violator(kind)
    x, y = _points(_linear(), 16)
    if kind == "fp64":
        x = x.double()
    results = {r.name: r for r in run_compliance_checks(model, x, y)}
    assert set(results) == set(CHECKS)
    assert not results[check].passed, results[check]
    assert results[check].message


def test_compliance_input_range_fires():
    model = _linear()
    x, y = _points(model, 8)
    results = {r.name: r for r in run_compliance_checks(model, x * 255, y)}
    assert not results["input_range"].passed
    assert "[0, 1]" in results["input_range"].message


@pytest.mark.parametrize("factory", [_linear, _conv])
def test_compliance_passes_on_clean_model(factory):
    model = factory()
    x, y = _points(model, 16)
    results = run_compliance_checks(model, x, y)
    assert [r.name for r in results if not r.passed] == []


def test_compliant_mode_raises_naming_the_check():
    model = _violator("softmax")
    x, y = _points(_linear(), 8)
    with pytest.raises(ComplianceError, match="logits"):
        evaluate_model(model, x, y, attacks="clean", compliant=True)
    with pytest.warns(ComplianceWarning, match="logits"):
        r = evaluate_model(model, x, y, attacks="clean")
    assert r.compliance["logits"]["passed"] is False


def test_compliant_mode_stops_on_train_mode_dropout():
    model = _violator("dropout_train")
    x, y = _points(_linear(), 8)
    with pytest.raises(ComplianceError, match=r"eval_mode.*1 \(Dropout\)"):
        evaluate_model(model, x, y, attacks="clean", compliant=True)


# ------------------------------------------------------------------------ FGSM / PGD / CW


@pytest.mark.parametrize("column", ["fgsm", "pgd20", "cw"])
@pytest.mark.parametrize("eps", [8 / 255, 2 / 255])
def test_adversarial_examples_stay_in_ball_and_box(column, eps):
    model = _conv()
    x, y = _points(model, 8)
    x_adv = adversarial_examples(model, x, y, column, eps=eps, seed=0)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    if column == "fgsm":  # a full eps step on every coordinate that is not clamped
        d = (x_adv - x).abs()
        inside = ((x + eps) < 1) & ((x - eps) > 0)
        assert torch.allclose(d[inside], torch.full_like(d[inside], eps), atol=1e-6)
    else:  # seeded: same seed, same point; another seed, another start
        again = adversarial_examples(model, x, y, column, eps=eps, seed=0)
        other = adversarial_examples(model, x, y, column, eps=eps, seed=1)
        assert torch.equal(x_adv, again) and not torch.equal(x_adv, other)


@pytest.mark.parametrize("eps_arg, eps", [("8/255", 8 / 255), (4 / 255, 4 / 255)])
def test_columns_settings_and_ordering(eps_arg, eps):
    model = _conv()
    x, y = _points(model, 24, wrong=3)
    r = evaluate_model(model, x, y, attacks="clean,fgsm,pgd20,cw", eps=eps_arg, batch_size=16)
    assert r.eps == eps
    assert r.settings["pgd20"]["step"] == pytest.approx(eps / 4)
    assert r.settings["cw"]["step"] == pytest.approx(eps / 4)
    assert r.settings["fgsm"]["step"] == pytest.approx(eps)
    assert r.settings["pgd20"]["steps"] == 20 and r.settings["cw"]["steps"] == 30
    assert r.settings["cw"]["kappa"] == 50
    assert r.settings["pgd20"]["random_start"] == "uniform" and r.settings["pgd20"]["clamp_start"]
    assert r.settings["fgsm"]["random_start"] == "none"
    for c in ("fgsm", "pgd20", "cw"):
        assert r.accuracy[c] <= r.accuracy["clean"]
        assert r.worst_class[c] <= r.accuracy[c]
    assert r.accuracy["clean"] == pytest.approx(21 / 24)
    assert r.accuracy["pgd20"] < r.accuracy["clean"]  # eps 4/255 and 8/255 break a random net
    if eps_arg == "8/255":
        assert r.settings["pgd20"]["step"] == 2 / 255


def test_step_recorded_as_eps_over_4_at_8_255():
    s = columns.column_settings("pgd20", eps=8 / 255)
    assert s["step"] == 2 / 255 and s["step_rule"] == "eps/4"


class _Rows(nn.Module):
    """Logit k = 10 x the mean of row k of a (1, 10, 4) image: linear, so every attack finds
    the worst case, which is known: lower the label's row by eps, raise another by eps."""

    def forward(self, x):
        return 10 * x.mean(dim=3).flatten(1)


def _rows_points():
    """12 points of classes 0, 1, 2 (classes 3-9 absent). Background 0.3; the label's row at
    0.6 (margin 0.3 > 2 eps: robust), or at 0.33 (margin 0.03 < 2 eps = 0.063: correct clean,
    broken by any attack), or the next class's row at 0.6 (wrong clean).

    class 0: 4 robust                  -> clean 4/4, attacked 4/4
    class 1: 1 robust, 2 weak, 1 wrong -> clean 3/4, attacked 1/4   (worst attacked)
    class 2: 2 robust, 2 wrong         -> clean 2/4, attacked 2/4   (worst clean)
    """
    kinds = {
        0: ["robust"] * 4,
        1: ["robust", "weak", "weak", "wrong"],
        2: ["robust"] * 2 + ["wrong"] * 2,
    }
    xs, ys = [], []
    for c, ks in kinds.items():
        for k in ks:
            x = torch.full((1, 10, 4), 0.3)
            if k == "wrong":
                x[0, (c + 1) % 10] = 0.6
            else:
                x[0, c] = 0.6 if k == "robust" else 0.33
            xs.append(x)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


def _check_worst_class(r, attacked):
    clean_pc = [1.0, 0.75, 0.5] + [None] * 7
    attacked_pc = [1.0, 0.25, 0.5] + [None] * 7
    d = r.to_dict()
    assert d["per_class"]["clean"] == clean_pc
    assert d["worst_class"]["clean"] == 0.5 and r.worst_class_index("clean") == 2
    assert d["accuracy"]["clean"] == 9 / 12
    for column in attacked:
        assert d["per_class"][column] == attacked_pc, column
        assert d["worst_class"][column] == 0.25 and r.worst_class_index(column) == 1, column
        assert d["accuracy"][column] == 7 / 12, column
    assert list(d["worst_class"]) == ["clean", *attacked]


def test_worst_class_is_known_exactly():
    from rich.console import Console

    from ardbench.eval import render_eval

    x, y = _rows_points()
    r = evaluate_model(_Rows().eval(), x, y, attacks="clean,fgsm,pgd20,cw", eps=8 / 255, seed=0)
    _check_worst_class(r, ["fgsm", "pgd20", "cw"])
    console = Console(record=True, width=200)
    render_eval(r, console=console)
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:5]]
        for line in console.export_text().splitlines()
        if line.count("│") > 4
    }
    assert rows["Clean"] == ["75.00", "50.00", "2"]
    for title in ("FGSM", "PGD-20", "CW∞"):
        assert rows[title] == ["58.33", "25.00", "1"], title


@pytest.mark.slow
def test_worst_class_autoattack():
    x, y = _rows_points()
    r = evaluate_model(
        _Rows().eval(), x, y, attacks="clean,aa", eps=8 / 255, aa_batch_size=12, seed=0
    )
    _check_worst_class(r, ["aa"])
    assert r.settings["aa"]["points_broken"]["apgd-ce"] == 2  # the two weak points


def test_parse_attacks():
    assert parse_attacks("aa,pgd20") == ("clean", "pgd20", "aa")
    assert parse_attacks(["clean", "cw", "fgsm"]) == ("clean", "fgsm", "cw")
    with pytest.raises(ValueError, match="unknown attack"):
        parse_attacks("clean,pgd7")


def test_rejects_nhwc_and_uint8():
    model = _linear()
    x, y = _points(model, 4)
    with pytest.raises(TypeError):
        evaluate_model(model, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="NHWC"):
        evaluate_model(nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), x.permute(0, 2, 3, 1), y)


# ---------------------------------------------------------------------------------- resume


def _comparable(r) -> dict:
    d = r.to_dict()
    for k in ("timing_s", "points_per_s"):
        d.pop(k)
    d["settings"].get("aa", {}).pop("seconds_per_attack", None)  # wall time, too
    return d


def test_chunked_resume_equals_uninterrupted(tmp_path, monkeypatch):
    model = _conv()
    x, y = _points(model, 20, wrong=3)
    kw = dict(
        attacks="clean,fgsm,pgd20,cw",
        eps=8 / 255,
        batch_size=4,
        aa_batch_size=4,
        seed=3,
        chunk_size=8,
    )
    reference = evaluate_model(model, x, y, **kw)
    state = tmp_path / "state.json"

    real_write = eval_state.write_json_atomic
    calls = {"n": 0}

    def failing_write(path, data):
        real_write(path, data)
        calls["n"] += 1
        if calls["n"] == 5:  # clean (3 chunks) done, fgsm 2 of 3 chunks done
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(eval_state, "write_json_atomic", failing_write)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, x, y, state_path=state, **kw)
    monkeypatch.setattr(eval_state, "write_json_atomic", real_write)
    saved = json.loads(state.read_text())
    assert saved["columns"]["clean"]["done"] == 20 and saved["columns"]["fgsm"]["done"] == 16

    attacked: list[int] = []
    real_resolve = runners.resolve_code

    def counting_resolve(ref):  # every registered attack's call, counted by its points
        attack = real_resolve(ref)

        def counted(model, x, y, ctx):
            attacked.append(len(x))
            return attack(model, x, y, ctx)

        return counted

    monkeypatch.setattr(runners, "resolve_code", counting_resolve)
    resumed = evaluate_model(model, x, y, state_path=state, **kw)
    assert resumed.resumed
    assert sum(attacked) == 4 + 20 + 20  # the rest of fgsm, then pgd20 and cw
    assert _comparable(resumed) == _comparable(reference)

    attacked.clear()
    again = evaluate_model(model, x, y, state_path=state, **kw)  # finished: nothing to redo
    assert attacked == [] and _comparable(again) == _comparable(reference)


def test_results_do_not_depend_on_chunking():
    model = _conv()
    x, y = _points(model, 20, wrong=3)
    kw = dict(attacks="clean,fgsm,pgd20,cw", eps=8 / 255, batch_size=4, aa_batch_size=4, seed=3)
    a = evaluate_model(model, x, y, chunk_size=4, **kw)
    b = evaluate_model(model, x, y, **kw)
    assert a.accuracy == b.accuracy and a.per_class == b.per_class


def test_results_do_not_depend_on_batch_size():
    """Random starts are drawn per point: a point gets the same start, hence the same
    adversarial point, whatever batch it is in; so the batch size (``auto`` picks it per
    device) changes only the speed."""
    model = _conv()
    x, y = _points(model, 20, wrong=3)
    whole = columns.adversarial_examples(model, x, y, "pgd20", eps=8 / 255, seed=5, start=0)
    parts = torch.cat(
        [
            columns.adversarial_examples(
                model, x[a:b], y[a:b], "pgd20", eps=8 / 255, seed=5, start=a
            )
            for a, b in ((0, 3), (3, 11), (11, 20))
        ]
    )
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)
    other_seed = columns.adversarial_examples(model, x, y, "pgd20", eps=8 / 255, seed=6, start=0)
    assert not torch.allclose(other_seed, whole)
    kw = dict(attacks="clean,fgsm,pgd20,cw", eps=8 / 255, seed=3)
    results = [evaluate_model(model, x, y, batch_size=b, **kw) for b in (3, 7, "auto")]
    assert results[2].batch_size == core.CPU_BATCH_SIZE
    for r in results[1:]:
        assert r.accuracy == results[0].accuracy and r.per_class == results[0].per_class


def test_per_point_starts_are_uniform_in_the_ball_and_recorded():
    x = torch.rand(64, 3, 8, 8)
    d = columns.per_point_start(x, 8 / 255, "Linf", seed=0, column="pgd20", start=10)
    assert d.shape == x.shape and float(d.abs().max()) <= 8 / 255
    assert abs(float(d.mean())) < 1e-3 and float(d.std()) == pytest.approx(
        8 / 255 / 3**0.5, rel=0.05
    )
    again = columns.per_point_start(x[5:9], 8 / 255, "Linf", seed=0, column="pgd20", start=15)
    torch.testing.assert_close(again, d[5:9], rtol=0, atol=0)
    assert not torch.equal(
        columns.per_point_start(x, 8 / 255, "Linf", seed=0, column="cw", start=10), d
    )
    l2 = columns.per_point_start(x, 0.5, "L2", seed=0, column="pgd20", start=0)
    assert float(l2.flatten(1).norm(dim=1).max()) <= 0.5 + 1e-6
    model = _conv()
    xs, ys = _points(model, 6)
    r = evaluate_model(model, xs, ys, attacks="clean,pgd20", eps=8 / 255, batch_size=4)
    assert r.settings["pgd20"]["seeding"] == columns.SEEDING
    assert all(s["precision"] == columns.PRECISION for s in r.settings.values())


def test_evaluation_turns_tf32_off_and_restores_it():
    seen = {}
    model = _conv()
    real_forward = model.forward

    def spy(x):
        seen["flags"] = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return real_forward(x)

    model.forward = spy
    x, y = _points(model, 4)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            evaluate_model(model, x, y, attacks="clean", eps=8 / 255)
        assert seen == {"flags": (False, False), "autocast": False}
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_batch_size_is_checked():
    model = _conv()
    x, y = _points(model, 4)
    for bad in (0, "big", 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or 'auto'"):
            evaluate_model(model, x, y, attacks="clean", batch_size=bad)
    with pytest.raises(ValueError, match="aa_batch_size"):
        evaluate_model(model, x, y, attacks="clean", aa_batch_size=0)
    assert core.choose_batch_size(model, x, 17) == 17
    assert core.choose_batch_size(model, x, "auto") == core.CPU_BATCH_SIZE


def test_state_of_another_evaluation_is_refused(tmp_path):
    model = _linear()
    x, y = _points(model, 8)
    state = tmp_path / "s.json"
    evaluate_model(model, x, y, attacks="clean", state_path=state, eps=8 / 255)
    with pytest.raises(ValueError, match="different evaluation.*eps"):
        evaluate_model(model, x, y, attacks="clean", state_path=state, eps=4 / 255)


@pytest.mark.slow
def test_chunked_resume_with_autoattack(tmp_path, monkeypatch):
    model = _linear()
    x, y = _points(model, 12)
    kw = dict(attacks="clean,aa", eps=2 / 255, batch_size=4, aa_batch_size=4, seed=0, chunk_size=4)
    reference = evaluate_model(model, x, y, **kw)
    state = tmp_path / "state.json"
    real_write = eval_state.write_json_atomic
    calls = {"n": 0}

    def failing_write(path, data):
        real_write(path, data)
        calls["n"] += 1
        if calls["n"] == 4:  # clean (3 chunks) + the first AA chunk
            raise KeyboardInterrupt

    monkeypatch.setattr(eval_state, "write_json_atomic", failing_write)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, x, y, state_path=state, **kw)
    monkeypatch.setattr(eval_state, "write_json_atomic", real_write)
    resumed = evaluate_model(model, x, y, state_path=state, **kw)
    assert _comparable(resumed) == _comparable(reference)
    assert resumed.settings["aa"]["chunks"] == 3


def test_pyautoattack_0_2_cannot_restore_its_state(tmp_path):
    """Why the adapter reads pyautoattack's state itself and re-runs a partial chunk instead of
    passing an existing state file back (ardbench.eval.autoattack): pyautoattack 0.2.0 writes
    its set of attacks as a string and compares it with a set on restore. When this test fails,
    pyautoattack can restore its own state: reconsider letting it continue a partial chunk."""
    from ardbench._compat import import_autoattack

    aa = import_autoattack()
    from pyautoattack.state import EvaluationState

    model = _linear()
    x, y = _points(model, 4)
    path = tmp_path / "aa.json"
    adversary = aa.AutoAttack(model, norm="Linf", eps=2 / 255, version="standard", seed=0)
    state = EvaluationState(set(adversary.attacks_to_run), path=path)
    state.robust_flags = torch.ones(4, dtype=torch.bool)  # saved to disk at once
    assert EvaluationState.from_disk(path).robust_flags.tolist() == [True] * 4
    with pytest.raises(ValueError, match="different set of attacks"):
        adversary.run_standard_evaluation(x, y, batch_size=4, state_path=path)


@pytest.mark.slow
def test_autoattack_resumes_from_pyautoattacks_state_files(tmp_path, monkeypatch):
    """AA's per-point results are pyautoattack's own state files: finished chunks are read back,
    a chunk interrupted inside AutoAttack runs again, a missing file is re-made."""
    from pyautoattack.state import EvaluationState

    import ardbench.eval.autoattack as adapter

    model = _linear()
    x, y = _points(model, 12)
    kw = dict(attacks="clean,aa", eps=2 / 255, batch_size=4, aa_batch_size=4, seed=0, chunk_size=4)
    reference = evaluate_model(model, x, y, **kw)
    state = tmp_path / "state.json"
    aa_dir = tmp_path / "state.autoattack"

    # interrupted inside AutoAttack's second chunk, after its first attack finished
    real_write, real_add = eval_state.write_json_atomic, EvaluationState.add_run_attack
    writes = {"n": 0}

    def counting_write(path, data):
        real_write(path, data)
        writes["n"] += 1

    def interrupting_add(self, attack):
        real_add(self, attack)
        if writes["n"] == 4:  # clean (3 chunks) + AA's first chunk recorded
            raise KeyboardInterrupt

    monkeypatch.setattr(eval_state, "write_json_atomic", counting_write)
    monkeypatch.setattr(EvaluationState, "add_run_attack", interrupting_add)
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, x, y, state_path=state, **kw)
    monkeypatch.setattr(EvaluationState, "add_run_attack", real_add)
    partial = EvaluationState.from_disk((aa_dir / "points-4-8.json").resolve())
    # pyautoattack's own, part-way record (its list of finished attacks is saved at most once a
    # minute, so it may lag behind the flags, which are saved after every batch)
    assert len(partial.robust_flags) == 4 and set(partial.run_attacks) < set(AA_ATTACKS)
    recorded = json.loads(state.read_text())["columns"]["aa"]
    assert recorded["done"] == 4 and recorded["correct"] == []  # no AA flags of ardbench's

    calls: list[int] = []
    real_run = adapter.run_autoattack

    def counting_run(model, x, y, **k):
        calls.append(int(k["state_path"].name.split("-")[1]))
        return real_run(model, x, y, **k)

    monkeypatch.setattr(adapter, "run_autoattack", counting_run)
    resumed = evaluate_model(model, x, y, state_path=state, **kw)
    assert calls == [4, 8]  # the first chunk read back, the interrupted one run again
    assert resumed.resumed and _comparable(resumed) == _comparable(reference)
    flags = torch.cat(
        [
            EvaluationState.from_disk((aa_dir / f"points-{a}-{a + 4}.json").resolve()).robust_flags
            for a in (0, 4, 8)
        ]
    )
    assert int(flags.sum()) / 12 == reference.accuracy["aa"]

    calls.clear()
    (aa_dir / "points-0-4.json").unlink()
    again = evaluate_model(model, x, y, state_path=state, **kw)
    assert calls == [0] and _comparable(again) == _comparable(reference)

    calls.clear()
    moved = tmp_path / "moved"
    moved.mkdir()
    state.rename(moved / "state.json")
    aa_dir.rename(moved / "state.autoattack")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyautoattack warns of the moved path: not passed on
        in_new_place = evaluate_model(model, x, y, state_path=moved / "state.json", **kw)
    assert calls == [] and _comparable(in_new_place) == _comparable(reference)


# ------------------------------------------------------------------- JSON, model_info, CLI


def _validate_result_json(d: dict, n: int) -> None:
    assert d["n_examples"] == n and isinstance(d["n_examples"], int)
    assert isinstance(d["eps"], float) and d["norm"] == "Linf"
    assert isinstance(d["seed"], int)
    for col, acc in d["accuracy"].items():
        assert isinstance(acc, float) and 0 <= acc <= 1, (col, acc)
        assert col in d["settings"] and col in d["timing_s"] and col in d["worst_class"]
    assert set(d["versions"]) >= {"torch", "pyautoattack", "ardbench"}
    assert all(isinstance(v["passed"], bool) for v in d["compliance"].values())


def _validate_model_info(m: dict, eps: str) -> None:
    keys = [
        "link",
        "name",
        "authors",
        "additional_data",
        "number_forward_passes",
        "dataset",
        "venue",
        "architecture",
        "eps",
        "clean_acc",
        "reported",
        "autoattack_acc",
        "external",
        "unreliable",
        "footnote",
    ]
    assert list(m) == keys
    assert m["eps"] == eps
    assert PCT.match(m["clean_acc"]) and PCT.match(m["autoattack_acc"])
    assert m["number_forward_passes"] == 1
    assert isinstance(m["additional_data"], bool) and isinstance(m["unreliable"], bool)
    assert m["external"] is None or PCT.match(m["external"])


def test_model_info_formats(aa_result):
    _, _, _, r = aa_result
    r8 = EvalResult(
        **{
            **r.__dict__,
            "eps": 8 / 255,
            "accuracy": {**r.accuracy, "clean": 0.8, "aa": 0.123456, "pgd20": 0.2, "cw": 0.1},
        }
    )
    info = model_info(
        r8,
        dataset="cifar10",
        architecture="ResNet-18",
        metadata={"name": "RSLAD", "authors": "Zi et al.", "venue": "ICCV 2021", "reported": 57.1},
    )
    _validate_model_info(info, "8/255")
    assert info["clean_acc"] == "80.00" and info["autoattack_acc"] == "12.35"
    assert info["external"] == "10.00"  # CW below AA
    assert info["reported"] == "57.10" and info["name"] == "RSLAD"
    assert info["architecture"] == "ResNet-18" and info["dataset"] == "cifar10"
    plain = model_info(r, dataset="cifar10")
    assert plain["eps"] == "2/255" and plain["link"] == PLACEHOLDER and plain["reported"] is None
    json.dumps(info, allow_nan=False)


def test_evaluate_spec_writes_json_and_model_info(tmp_path):
    out, info = tmp_path / "r.json", tmp_path / "m.json"
    r = evaluate_spec(
        "small_cnn",
        "digits",
        n_examples=6,
        attacks="clean,pgd20,aa",
        eps="8/255",
        batch_size=6,
        seed=0,
        device="cpu",
        json_out=out,
        model_info_out=info,
        progress=False,
    )
    d = json.loads(out.read_text())
    _validate_result_json(d, 6)
    assert d["accuracy"] == r.accuracy and d["eps"] == 8 / 255 and d["eps_str"] == "8/255"
    assert d["model"]["spec"] == "small_cnn" and len(d["model"]["sha256"]) == 64
    assert d["data"]["fingerprint"] and d["data"]["first_n_test_points"] == 6
    m = json.loads(info.read_text())
    _validate_model_info(m, "8/255")
    assert m["clean_acc"] == f"{100 * r.accuracy['clean']:.2f}"
    assert m["architecture"] == "small_cnn"


def test_cli_eval(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(
        [
            "eval",
            "small_cnn",
            "--dataset",
            "digits",
            "--n-examples",
            "8",
            "--attacks",
            "clean,fgsm",
            "--eps",
            "8/255",
            "--json",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "FGSM" in printed and "Clean" in printed
    _validate_result_json(json.loads(out.read_text()), 8)
    rc = main(
        [
            "eval",
            "small_cnn",
            "--dataset",
            "digits",
            "--n-examples",
            "8",
            "--attacks",
            "clean",
            "--model-info",
            str(tmp_path / "m.json"),
            "--quiet",
        ]
    )
    assert rc == 2 and "AutoAttack" in capsys.readouterr().err


def test_cli_eval_batch_sizes(tmp_path, capsys):
    base = ["eval", "small_cnn", "--dataset", "digits", "--n-examples", "8", "--quiet"]
    out = tmp_path / "r.json"
    rc = main([*base, "--attacks", "clean,pgd20", "--batch-size", "3", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["batch_size"] == 3
    rc = main([*base, "--attacks", "clean", "--json", str(out)])  # default: auto
    assert rc == 0 and json.loads(out.read_text())["batch_size"] == core.CPU_BATCH_SIZE
    capsys.readouterr()
    assert main([*base, "--batch-size", "0"]) == 2  # a bad flag: one error line, exit 2
    assert "expected auto or a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_robustbench_cross_check_agrees(aa_result):
    model, x, y, r = aa_result
    cc = robustbench_cross_check(model, x, y, eps=2 / 255, batch_size=8, seed=0)
    assert cc["clean"] == pytest.approx(r.accuracy["clean"])
    assert cc["aa"] == pytest.approx(r.accuracy["aa"])


# ------------------------------------------------------------------------------- real data


def _exact_test():
    path = SHARED_DATA / "cifar10" / "cifar10_exact_test.npz"
    if not path.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    d = np.load(path)
    x = torch.from_numpy(d["x_test"]).permute(0, 3, 1, 2).float().div(255).contiguous()
    return x, torch.from_numpy(d["y_test"]).long()


def _resnet4b():
    path = SHARED_DATA / "models" / "resnet4b_cifar10_linf2.pt2"
    if not path.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    return torch.export.load(str(path)).module()


@pytest.mark.realdata
def test_resnet4b_clean_on_exact_test_images():
    x, y = _exact_test()
    model = _resnet4b()
    r = evaluate_model(model, x, y, attacks="clean", eps=2 / 255, batch_size=512)
    assert len(x) == 1017
    assert round(100 * r.accuracy["clean"], 2) == 77.29
    assert all(v["passed"] for v in r.compliance.values()), r.compliance


@pytest.mark.realdata
@pytest.mark.slow
def test_resnet4b_autoattack_equals_direct_pyautoattack():
    from ardbench._compat import import_autoattack

    x, y = _exact_test()
    x, y = x[:100], y[:100]
    model = _resnet4b()
    r = evaluate_model(model, x, y, attacks="clean,aa", eps=2 / 255, batch_size=256, seed=0)
    aa = import_autoattack()
    adversary = aa.AutoAttack(model, norm="Linf", eps=2 / 255, version="standard", seed=0)
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=256)
    assert r.accuracy["aa"] == int((y_adv == y).sum()) / len(y)
    assert list(r.aa_breakdown) == list(AA_ATTACKS)
