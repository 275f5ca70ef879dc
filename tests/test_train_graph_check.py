"""The captured step checks itself (issue 27; ardbench/train/graph_check.py), on the CPU.

:class:`~ardbench.train.graph.EagerReplay` stands in for CUDA (see tests/test_train_graph.py);
backends derived from it plant the faults the check must catch: a captured step whose
update, loss or random draw differs from the eager step's, or that fails while checked.
The GPU test is ``test_self_check_passes_on_the_gpu`` in tests/test_train_cuda.py.
"""

from __future__ import annotations

import pytest
import torch
from stepkit import WARMUP, assert_runs_agree, plans, step_values, tiny_runner

from ardbench.methods import Batch
from ardbench.train.check import tiny_setup
from ardbench.train.graph import EagerReplay, _EagerCaptured
from ardbench.train.graph_check import compare, live_state

STEPS = 5  # 2 warm-up steps, the checked capture, 2 replays (or eager steps after a fallback)


def drive(name, plan, backend=None, check=True, steps=STEPS):
    """``steps`` steps on the tiny setup; returns (values, final student state, runner)."""
    built, student, teacher, extras, batch = tiny_setup(name)
    runner = tiny_runner(built, name, student, teacher, extras, plan, backend or EagerReplay())
    if runner.graph is not None:
        runner.graph.warmup_steps = WARMUP
        runner.graph.self_check = check
    torch.manual_seed(1234)
    values = []
    for i in range(steps):
        b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index.roll(i, 0))
        values.append(step_values(runner, b, epoch=0, step=i))
    final = {k: v.detach().clone() for k, v in student.state_dict().items()}
    return values, final, runner


class _Planted(EagerReplay):
    """Captures like EagerReplay; ``fault`` runs after the captured step (each replay too)."""

    def __init__(self, fault):
        self.fault = fault

    def capture(self, fn):
        def faulty():
            out = fn()
            self.fault(out)
            return out

        return _EagerCaptured(faulty, faulty())


@pytest.mark.parametrize("name", ["rslad", "pgd_at", "adaiad"])
def test_a_faithful_capture_passes_and_trains_each_batch_once(name):
    eager, captured = plans()
    a = drive(name, captured)
    b = drive(name, eager)
    assert_runs_agree(a, b)  # the checked batch was trained once
    g = a[2].graph
    assert g.off is None and g.checked and (g.counts.captures, g.counts.self_checks) == (1, 1)
    assert g.counts.eager == 0  # the check's eager step is a comparison, not a trained step
    assert any(n.startswith("cuda_graph self-check passed") for n in captured.notes)
    assert a[2].stats.read().examples == b[2].stats.read().examples == STEPS * 8


class _BrokenReplay(EagerReplay):
    """Records at capture without running (as CUDA does); its replay raises."""

    def capture(self, fn):
        def broken():
            raise RuntimeError("replay broke\nsecond line")

        captured = _EagerCaptured(broken, {})
        captured.executed = False
        return captured


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("update", "the captured update differs"),
        ("loss", "loss term"),
        ("rng", "random generator advanced differently"),
        ("error", "the check failed (RuntimeError: replay broke)"),
    ],
)
def test_a_planted_mismatch_falls_back_to_the_eager_step(fault, expected):
    eager, captured = plans()
    built, student, teacher, extras, batch = tiny_setup("rslad")

    def plant(out):
        if fault == "update":
            with torch.no_grad():
                student.conv.weight.add_(1e-2)
        elif fault == "loss":
            out["kl_adv"] = out["kl_adv"] * 1.5
        elif fault == "rng":
            torch.rand(1)

    backend = _BrokenReplay() if fault == "error" else _Planted(plant)
    runner = tiny_runner(built, "rslad", student, teacher, extras, captured, backend)
    runner.graph.warmup_steps, runner.graph.self_check = WARMUP, True
    torch.manual_seed(1234)
    values = []
    with pytest.warns(RuntimeWarning, match="self-check") as warned:
        for i in range(STEPS):
            b = Batch(x=batch.x.roll(i, 0), y=batch.y.roll(i, 0), index=batch.index.roll(i, 0))
            values.append(step_values(runner, b, epoch=0, step=i))
    assert len([w for w in warned if "self-check" in str(w.message)]) == 1  # one line
    final = {k: v.detach().clone() for k, v in student.state_dict().items()}
    reference = drive("rslad", eager)
    assert_runs_agree((values, final, runner), reference)  # eager's result, each batch once
    g = runner.graph
    assert g.off is not None and expected in g.off and "second line" not in g.off
    assert not captured.cuda_graph and any(expected in n for n in captured.notes)
    assert (g.counts.replays, g.counts.eager, g.counts.self_checks) == (0, STEPS - WARMUP, 1)
    assert runner.stats.read().examples == STEPS * 8


def test_the_check_is_off_unless_asked_outside_cuda():
    _, captured = plans()
    _, _, runner = drive("pgd_at", captured, check=False)
    assert not runner.graph.checked and not any("self-check" in n for n in captured.notes)
    built, student, teacher, extras, _ = tiny_setup("pgd_at")
    fresh = tiny_runner(built, "pgd_at", student, teacher, extras, plans()[1], EagerReplay())
    assert fresh.graph.self_check is False  # a stand-in backend: tests switch it on


def test_live_state_names_what_the_step_changes():
    eager, _ = plans()
    _, _, runner = drive("rslad", eager, steps=1)
    live = live_state(runner)
    assert "student.conv.weight" in live and "stats.step" in live
    assert any(k.startswith("optimizer.") and k.endswith("momentum_buffer") for k in live)


def test_compare_states_the_tolerance():
    before = {"w": torch.zeros(4), "n": torch.zeros((), dtype=torch.int64)}
    eager = {"w": torch.full((4,), 1e-3), "n": torch.ones((), dtype=torch.int64)}
    close = {"w": eager["w"] * (1 + 5e-3), "n": eager["n"].clone()}
    assert compare({"l": 1.0}, {"l": 1.0 + 5e-4}, before, eager, close) is None
    assert "loss term l" in compare({"l": 1.0}, {"l": 1.01}, before, eager, close)
    far = {"w": eager["w"] * 1.9, "n": eager["n"].clone()}  # e.g. momentum missing
    assert "w: the captured update differs" in compare({}, {}, before, eager, far)
    wrong_count = {"w": eager["w"].clone(), "n": torch.zeros((), dtype=torch.int64)}
    assert "n differs" in compare({}, {}, before, eager, wrong_count)
