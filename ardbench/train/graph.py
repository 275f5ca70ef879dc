"""The whole training step as one CUDA graph: captured once, replayed at every step.

At the faithful batch (128) a GPU step is bound by kernel launches and host work, not by
arithmetic (issue 14). Replaying a captured graph launches the step's thousands of kernels —
attack with its random start, teacher forwards, the method's losses, backward, the fused SGD
update and the epoch's device-side sums (:class:`~ardbench.train.stats.EpochStats`, in-place
ops) — with one call. :class:`CapturedStep` drives it for :class:`~ardbench.train.step.TrainStep`:

1. **Warm-up**: the first :data:`WARMUP_STEPS` steps of every graph run eagerly on a side
   stream (real steps on real batches: they train). They build the optimiser's momentum
   buffers, the epoch-sum slots, cuDNN's autotuned plans and torch.compile's graphs, and put
   autograd's gradient accumulation on a non-default stream (a default-stream warm-up makes
   the capture fail, pytorch PR #64339). The last one runs under
   :func:`~ardbench.train.host_reads.count_host_reads`: a step that reads a tensor value on
   the host cannot be captured, and is not tried.
2. **Capture** on the next batch, copied into static input buffers (``x``, ``y``, ``index``),
   with the gradients set to ``None`` first (backward then allocates them in the graph's pool
   and every replay rewrites them). Capture records and does not execute: that batch is then
   trained by the first replay.
3. **Replay** at every later step: copy the batch into the static buffers, replay, count the
   examples on the host. The learning rate is a device tensor read by fused SGD inside the
   graph; the schedule writes it in place (``speed.set_lr``), so it needs no re-capture.

What a replay cannot change is frozen at capture: Python branches, Python numbers and modes.
So a graph is captured again when :meth:`Method.capture_key(epoch) <ardbench.methods.Method.
capture_key>` changes (IAD: when introspection starts); a method that reads ``ctx.epoch``
without overriding it is re-captured every epoch; one that reads ``ctx.step`` runs eagerly.
Student/teacher ``train()``/``eval()`` switches, SharedForward's sharing decisions and the
attack's fixed number of steps are the same at every step, so replaying them is exact.

**Shapes are static.** A batch of another shape than the captured one — the epoch's last,
partial batch (50,000 = 390 × 128 + 80 for CIFAR) — runs eagerly: one eager step per epoch
costs well under 1 % of an epoch, needs no second private memory pool and no warm-up of a
second shape, and keeps the recipe's data (dropping the batch would change what is trained).

**Fallback.** A step that cannot be captured (host reads found in the warm-up, a capture that
raises, a slot created during capture, ``ctx.step`` read) runs eagerly from then on; the
reason goes into the plan's notes (hence ``log.jsonl`` and the record) and a RuntimeWarning.

**Self-check.** On CUDA the run's first capture is compared with an eager step on the same
state (``graph_check.py``: loss terms, every changed tensor's update, the generator); on a
mismatch or an error the step runs eagerly from then on, the same way.

Verified against torch 2.14.1's Python sources (``/work/venv``), the points this relies on:

- ``optim/sgd.py``: ``SGD(lr: float | Tensor)`` (a 1-element tensor); ``SGD.step`` never calls
  the optimiser's capture health check (only Adam-style optimisers with ``capturable`` do);
  ``_fused_sgd`` passes a tensor lr to ``torch._fused_sgd_`` as it is, while the foreach and
  for-loop paths turn it into a scalar (``_to_scalar``, ``add_(alpha=-lr)``: a host read,
  frozen at capture) — hence fused SGD is required (``speed.resolve_speed``).
  ``is_first_step`` is "every momentum buffer is None": captured before any real step, every
  replay would take the first-step path (``buf = grad``); the warm-up prevents that.
- ``optim/lr_scheduler.py`` ``_update_param_group_val``: a tensor lr is updated with
  ``fill_`` — what ``speed.set_lr`` does (ardbench's schedule is ``schedule.lr_at``).
- ``optim/optimizer.py`` ``load_state_dict``: param groups are replaced by the saved ones
  (a float lr from ``speed.optimizer_state``); ``speed.set_optimizer_impl`` makes it a
  device tensor again before any capture, and a replay first checks that the graph's lr
  tensors are still the optimiser's (identity), else it warms up and captures again.
- ``cuda/graphs.py`` ``graph``: synchronises and empties the cache on entry, captures on its
  own side stream, ``capture_begin(pool, capture_error_mode="global")``;
  ``make_graphed_callables`` refuses autocast's cache (``speed.autocast`` turns it off).
- ``nn/modules/batchnorm.py``: train-mode BatchNorm updates ``num_batches_tracked`` in place
  (capturable); only ``momentum=None`` reads it on the host, which the warm-up's host-read
  probe finds.

Not in the Python sources, relied on from ``../shared/reference/cuda-graph-step.md`` (ATen's
C++): the default CUDA generator is registered with every capture and each replay advances
its Philox offset by the graph's total draw, so random starts are fresh at every replay and
equal to eager's for the same seed (``torch.manual_seed`` at an epoch start applies to later
replays); the fused SGD kernel reads a CUDA lr tensor in the kernel. ``autograd.grad`` with
``create_graph=True`` (KDIGA) under capture is unverified. The ``gpu`` tests
(``tests/test_train_cuda.py``) compare captured and eager steps for every method.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..methods import Batch, Method, StepContext
from .capture_safety import capture_on
from .graph_check import checked_capture
from .graph_types import Backend, Captured, EagerStep, GraphCounts
from .host_reads import count_host_reads

__all__ = [
    "WARMUP_STEPS",
    "CapturedStep",
    "CudaGraphs",
    "EagerReplay",
    "WatchedContext",
]

WARMUP_STEPS = 3  # eager steps before each capture (the CUDA graphs notes' whole-network example)

_UNSET = object()


class WatchedContext(StepContext):
    """A :class:`StepContext` that records whether ``losses()`` read ``epoch`` or ``step``
    (the step is built with it while being captured)."""

    reads: set[str]

    def __getattribute__(self, name: str) -> Any:
        if name in ("epoch", "step"):
            object.__getattribute__(self, "reads").add(name)
        return object.__getattribute__(self, name)


# ------------------------------------------------------------------------------ backends


@dataclass(eq=False)
class _CudaCaptured:
    graph: Any  # torch.cuda.CUDAGraph
    outputs: dict[str, Tensor]  # static: rewritten by every replay
    executed: bool = False

    def replay(self) -> dict[str, Tensor]:
        self.graph.replay()
        return self.outputs

    def release(self) -> None:
        self.outputs = {}
        self.graph.reset()


class CudaGraphs:
    """The real thing: warm-up on a side stream, ``torch.cuda.graph`` capture, replay."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._side: torch.cuda.Stream | None = None

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            yield
        current.wait_stream(self._side)

    def capture(self, fn: Callable[[], dict[str, Tensor]]) -> _CudaCaptured:
        # on the warm-up's stream (autograd's accumulation streams are the warm-up's); a
        # failed capture restores the stream and the generator (capture_safety.py)
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        graph = torch.cuda.CUDAGraph()
        outputs = capture_on(graph, self._side, self.device, fn)
        return _CudaCaptured(graph, outputs)


@dataclass(eq=False)
class _EagerCaptured:
    fn: Callable[[], dict[str, Tensor]]
    outputs: dict[str, Tensor]
    executed: bool = True

    def replay(self) -> dict[str, Tensor]:
        return self.fn()

    def release(self) -> None:
        self.outputs = {}


class EagerReplay:
    """A CPU stand-in for :class:`CudaGraphs`, to test the orchestration without a GPU:
    "capture" runs the step once (and that run is the step), "replay" runs the same call
    again — with the static buffers and the *capture's* epoch and step, as a graph would,
    so a missing re-capture shows as a wrong result here too. What it cannot show is what
    only CUDA does (kernels frozen at capture, pools, streams)."""

    def warmup(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def capture(self, fn: Callable[[], dict[str, Tensor]]) -> _EagerCaptured:
        return _EagerCaptured(fn, fn())


# ------------------------------------------------------------------------------ the driver


def _overrides_capture_key(method: Method[Any]) -> bool:
    return type(method).capture_key is not Method.capture_key


class CapturedStep:
    """Drives a :class:`TrainStep` as warm-up, capture and replays (see the module doc)."""

    def __init__(
        self, step: EagerStep, backend: Backend | None = None, warmup: int = WARMUP_STEPS
    ) -> None:
        self.step = step
        self.plan = step.plan
        self.backend: Backend = backend or CudaGraphs(step.plan.device)
        self.warmup_steps = max(1, int(warmup))
        self.counts = GraphCounts()
        self.off: str | None = None  # why the step runs eagerly for good
        self.per_epoch = False  # losses() reads ctx.epoch and says nothing: one graph per epoch
        self._captured: Captured | None = None
        self._key: Any = _UNSET
        self._warm = 0
        self._shape: tuple | None = None
        self._static: Batch | None = None
        self._lrs: tuple[Tensor, ...] = ()
        self._grads: list[Tensor | None] = []
        self._grads_bound = True
        # the first capture is compared with an eager step (graph_check.py); on CUDA only
        self.self_check = isinstance(self.backend, CudaGraphs)
        self.checked = False

    # -------------------------------------------------------------------------- per step

    def __call__(self, batch: Batch, *, epoch: int, step: int) -> dict[str, Tensor]:
        if self.off is not None or not self._fits(batch):
            return self._eager(batch, epoch, step)
        key = self.key(epoch)
        if key != self._key or (self._captured is not None and not self._same_lr()):
            self._drop()
            self._key, self._warm = key, 0
        if self._captured is None:
            if self._warm < self.warmup_steps:
                return self._warmup(batch, epoch, step)
            if self.self_check and not self.checked:  # the run's first capture: checked
                self.checked = True
                return checked_capture(self, batch, epoch, step)
            out = self._capture(batch, epoch, step)
            if out is not None:
                return out
        return self._replay(batch)

    def _replay(self, batch: Batch) -> dict[str, Tensor]:
        assert self._captured is not None
        self._load(batch)
        out = self._captured.replay()
        self.counts.replays += 1
        self.step.stats.count(len(batch.y))
        self._bind_grads()
        return out

    def key(self, epoch: int) -> Any:
        return (self.step.method.capture_key(epoch), epoch if self.per_epoch else None)

    @property
    def captured(self) -> bool:
        return self._captured is not None

    def release(self) -> None:
        """Free the graph and its memory pool (before evaluation)."""
        self._drop()
        self._key = _UNSET

    # -------------------------------------------------------------------------- internals

    def _fits(self, batch: Batch) -> bool:
        shape = (
            tuple(batch.x.shape),
            batch.x.dtype,
            tuple(batch.y.shape),
            tuple(batch.index.shape),
        )
        if self._shape is None:
            self._shape = shape  # the first batch of a run is a full one
        return shape == self._shape

    def _eager(self, batch: Batch, epoch: int, step: int) -> dict[str, Tensor]:
        self.counts.eager += 1
        self._grads_bound = False  # eager backward allocates new .grad tensors
        return self.step.eager(batch, epoch=epoch, step=step)

    def _warmup(self, batch: Batch, epoch: int, step: int) -> dict[str, Tensor]:
        self._warm += 1
        self.counts.warmup += 1
        self._grads_bound = False
        last = self._warm == self.warmup_steps
        with self.backend.warmup():
            if not last:
                return self.step.eager(batch, epoch=epoch, step=step)
            # the dispatch-level probe also sees C++ syncs; not around compiled code
            with count_host_reads(dispatch=not self.plan.compile) as reads:
                out = self.step.eager(batch, epoch=epoch, step=step)
        if reads.count:
            self._disable(f"the step reads tensor values on the host ({reads.describe()})")
        return out

    def _load(self, batch: Batch) -> None:
        if self._static is None:
            self._static = Batch(
                x=torch.empty_like(batch.x, memory_format=torch.contiguous_format),
                y=torch.empty_like(batch.y),
                index=torch.empty_like(batch.index),
            )
        self._static.x.copy_(batch.x)
        self._static.y.copy_(batch.y)
        self._static.index.copy_(batch.index)

    def _lr_tensors(self) -> tuple[Tensor, ...] | None:
        lrs = [g["lr"] for g in self.step.optimizer.param_groups]
        if not all(isinstance(lr, Tensor) for lr in lrs):
            return None
        return tuple(lrs)

    def _same_lr(self) -> bool:
        groups = self.step.optimizer.param_groups
        return len(groups) == len(self._lrs) and all(
            g["lr"] is lr for g, lr in zip(groups, self._lrs, strict=False)
        )

    def _capture(self, batch: Batch, epoch: int, step: int) -> dict[str, Tensor] | None:
        """Capture on this batch. Returns the step's outputs when this call already trained
        the batch (eager fallback, or a backend that executes at capture), else None (the
        caller replays)."""
        lrs = self._lr_tensors()
        if lrs is None:
            self._disable("the learning rate is a Python number, which a graph would freeze")
            return self._eager(batch, epoch, step)
        st = self.step
        self._load(batch)
        assert self._static is not None
        static = self._static
        before = st.stats.keys()
        reads: set[str] = set()
        st.optimizer.zero_grad(set_to_none=True)
        try:
            captured = self.backend.capture(lambda: st._run(static, epoch, step, reads=reads))
        except Exception as exc:  # noqa: BLE001 - any failure: eager, with the reason
            st.optimizer.zero_grad(set_to_none=True)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self._disable(f"capture failed ({type(exc).__name__}: {first[:200]})")
            return self._eager(batch, epoch, step)
        problem = None
        if st.stats.keys() != before:
            problem = "the step created a loss or diagnostic slot only while being captured"
        elif "step" in reads:
            problem = f"{st.method_name}'s losses() reads ctx.step, which a replay cannot change"
        if problem is not None:
            executed, outputs = captured.executed, captured.outputs
            self._captured = captured
            self._disable(problem)  # releases it
            if executed:  # that run was the step itself
                st.stats.count(len(batch.y))
                return outputs
            return self._eager(batch, epoch, step)
        if "epoch" in reads and not self.per_epoch and not _overrides_capture_key(st.method):
            self.per_epoch = True
            self._key = self.key(epoch)
            self._note(
                f"cuda_graph: {st.method_name}'s losses() reads ctx.epoch and it defines no "
                "capture_key: captured again every epoch"
            )
        self._captured, self._lrs = captured, lrs
        self.counts.captures += 1
        self.counts.keys.append(self._key)
        self._grads = [p.grad for p in st.params]
        self._grads_bound = True
        if captured.executed:
            st.stats.count(len(batch.y))
            return captured.outputs
        return None

    def _bind_grads(self) -> None:
        """After an eager step the parameters' ``.grad`` are the eager ones; point them back
        at the graph's (which the replay just wrote), for whoever reads them."""
        if self._grads_bound or self._captured is None or self._captured.executed:
            return
        for p, g in zip(self.step.params, self._grads, strict=True):
            p.grad = g
        self._grads_bound = True

    def _drop(self) -> None:
        if self._captured is None:
            return
        self.step.optimizer.zero_grad(set_to_none=True)  # they live in the graph's pool
        self._grads = []
        self._captured.release()
        self._captured = None
        self._lrs = ()

    def _note(self, note: str) -> None:
        self.plan.notes.append(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)

    def _disable(self, reason: str) -> None:
        self.off = reason
        self._drop()
        self.plan.cuda_graph = False
        self._note(f"cuda_graph off: {reason}; the step runs eagerly")
