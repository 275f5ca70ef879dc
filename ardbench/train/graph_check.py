"""The captured step checks itself (issue 27): its first capture is compared with an eager step.

The whole-step CUDA graph (``graph.py``) replays what was captured, and what was captured can
be wrong in ways no error reports: a Python number frozen at capture, a momentum buffer
missing (every replay then takes SGD's first-step path), a random start that does not
advance, an input buffer the graph does not read. So the first time a run captures its step
(:func:`checked_capture`, on CUDA; tests switch it on for stand-in backends):

1. the state the step changes is saved (:func:`live_state`: student, method and extra
   networks' parameters and buffers, the optimiser's state, the epoch's device-side sums,
   the random generator);
2. the step runs **eagerly** on the batch (on the warm-up's stream, so autograd's
   accumulation stays on the stream the capture uses); its loss terms, the new state and the
   generator are kept;
3. the saved state is put back (in place: the graph will read these very tensors), the step
   is **captured and replayed** on the same batch;
4. the two are compared (:func:`compare`) within :data:`LOSS_RTOL` / :data:`UPDATE_RTOL`.

If they agree the run goes on with the graph (the replay trained the batch once) and the
plan's notes say the check passed; on a mismatch or an error the graph is dropped, the eager
step's state is put back (so the batch was trained once, eagerly) and the step runs eagerly
from then on, with one warning line and the reason in the notes, hence in the record's
``hardware.speed``.

**Tolerances.** Replay and eager run the same kernels on the same data, so they agree to
rounding, except where kernels are not deterministic (atomic adds in some backward kernels)
and where PGD's ``sign()`` of a near-zero gradient flips on such a difference and moves one
pixel by a step. Loss terms are compared at :data:`LOSS_RTOL` (1e-3) relative; each changed
tensor's *update* (new minus saved) at :data:`UPDATE_RTOL` (1e-2) of the eager update's
largest entry, plus an absolute floor at float32 rounding of the values. The faults above are
O(1): a missing momentum buffer changes the update by the momentum term (0.9 of the last
one), a stale input changes the losses entirely, a frozen random start changes the next
draw. The generator's state after the step must be equal: a replay advances it by the
graph's whole draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import torch
from torch import Tensor

from ..methods import Batch
from .graph_types import CapturingStep, EagerStep

__all__ = ["LOSS_RTOL", "UPDATE_RTOL", "checked_capture", "compare", "live_state"]

LOSS_RTOL = 1e-3
LOSS_ATOL = 1e-6
UPDATE_RTOL = 1e-2
VALUE_RTOL = 2e-7  # float32 rounding of the values themselves (2^-23 ≈ 1.2e-7, twice)


# ------------------------------------------------------------------------------ the state


def _named(prefix: str, module: torch.nn.Module | None) -> Iterator[tuple[str, Tensor]]:
    if module is None:
        return
    for name, t in module.state_dict(keep_vars=True).items():
        yield f"{prefix}.{name}", t


def live_state(step: EagerStep) -> dict[str, Tensor]:
    """Every tensor the step may change, by a stable name (the live tensors, not copies)."""
    found: dict[str, Tensor] = {}
    nets: list[tuple[str, torch.nn.Module | None]] = [
        ("student", step.student),
        ("method", step.method),
        *((f"extra.{k}", m) for k, m in step.raw_extras.items()),
    ]
    for prefix, module in nets:
        for name, t in _named(prefix, module):
            found.setdefault(name, t)
    for i, p in enumerate(step.params):
        for key, t in step.optimizer.state.get(p, {}).items():
            if isinstance(t, Tensor):
                found[f"optimizer.{i}.{key}"] = t
    st = step.stats
    for table_name in ("sums", "diag", "term_bad"):
        for key, t in getattr(st, table_name).items():
            found[f"stats.{table_name}.{key}"] = t
    for key in ("grad_bad", "first_bad", "step"):
        found[f"stats.{key}"] = getattr(st, key)
    return found


def _snapshot(live: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: t.detach().clone() for k, t in live.items()}


def _restore(live: dict[str, Tensor], saved: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for k, t in live.items():
            t.copy_(saved[k])


@dataclass
class _Rng:
    cpu: Tensor
    cuda: Tensor | None

    @classmethod
    def get(cls, device: torch.device) -> _Rng:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda)

    def set(self, device: torch.device) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)

    def same(self, other: _Rng) -> bool:
        cuda_same = (self.cuda is None) == (other.cuda is None) and (
            self.cuda is None or other.cuda is None or torch.equal(self.cuda, other.cuda)
        )
        return torch.equal(self.cpu, other.cpu) and cuda_same


# ------------------------------------------------------------------------------ comparing


def compare(
    eager_terms: dict[str, float],
    graph_terms: dict[str, float],
    before: dict[str, Tensor],
    eager_after: dict[str, Tensor],
    graph_after: dict[str, Tensor],
) -> str | None:
    """The first disagreement between the eager and the captured step, in words, or None."""
    if eager_terms.keys() != graph_terms.keys():
        return f"loss terms {sorted(graph_terms)} instead of {sorted(eager_terms)}"
    for k, e in eager_terms.items():
        g = graph_terms[k]
        if not abs(g - e) <= LOSS_ATOL + LOSS_RTOL * abs(e):
            return f"loss term {k}: {g:.6g} captured vs {e:.6g} eager"
    for name, b in before.items():
        te, tg = eager_after[name], graph_after[name]
        if not b.is_floating_point():
            if not torch.equal(te, tg):
                return f"{name} differs (an integer tensor: exact)"
            continue
        de, dg = (te - b).double(), (tg - b).double()
        scale = float(de.abs().max()) if de.numel() else 0.0
        floor = VALUE_RTOL * (float(b.abs().max()) if b.numel() else 0.0) + 1e-12
        diff = float((dg - de).abs().max()) if de.numel() else 0.0
        if not diff <= UPDATE_RTOL * scale + floor:
            return f"{name}: the captured update differs by {diff:.3g} (eager's is {scale:.3g})"
    return None


# ------------------------------------------------------------------------------ the check


def checked_capture(cs: CapturingStep, batch: Batch, epoch: int, step: int) -> dict[str, Tensor]:
    """Train ``batch`` once, capturing the step and checking the capture against an eager
    step on the same state (see the module doc). Returns the step's loss terms."""
    st = cs.step
    device = torch.device(st.plan.device)
    live = live_state(st)
    before, examples, rng0 = _snapshot(live), st.stats.examples, _Rng.get(device)
    with cs.backend.warmup():  # on the warm-up's stream, as every eager step before capture
        eager_out = {k: v.clone() for k, v in st.eager(batch, epoch=epoch, step=step).items()}
    cs.counts.self_checks += 1
    eager_after, rng_e = _snapshot(live), _Rng.get(device)
    _restore(live, before)
    st.stats.examples = examples
    rng0.set(device)
    try:
        out = cs._capture(batch, epoch, step)
        if cs.off is not None:  # the capture fell back: that was an eager step, from `before`
            assert out is not None
            return out
        if out is None:
            out = cs._replay(batch)
        problem = compare(_values(eager_out), _values(out), before, eager_after, _snapshot(live))
        if problem is None and not _Rng.get(device).same(rng_e):
            problem = "the random generator advanced differently"
    except Exception as exc:  # noqa: BLE001 - any failure: eager, with the reason
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        problem = f"the check failed ({type(exc).__name__}: {text[:200]})"
    if problem is None:
        assert out is not None
        cs.plan.notes.append(
            f"cuda_graph self-check passed: the captured step gave the eager step's loss terms "
            f"(rtol {LOSS_RTOL:g}) and updates of {len(before)} state tensors "
            f"(rtol {UPDATE_RTOL:g})"
        )
        return out
    cs._disable(f"self-check: the captured step differs from the eager one: {problem}")
    with suppress(Exception):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    _restore(live, eager_after)  # the batch is trained once: eagerly
    cs.counts.eager += 1
    st.stats.examples = examples + len(batch.y)
    rng_e.set(device)
    return eager_out


def _values(terms: dict[str, Tensor]) -> dict[str, float]:
    """Loss terms on the host: the check's one read (outside the captured step)."""
    keys = list(terms)
    if not keys:
        return {}
    values = torch.stack([terms[k].detach().double() for k in keys]).cpu().numpy().tolist()
    return dict(zip(keys, values, strict=True))
