"""One optimisation step of the one trainer, and what it hands the method.

:class:`TrainStep` runs the method's ``losses`` (under bf16 autocast if asked), backpropagates,
checks the terms and steps the optimiser; :class:`SharedForward` memoises the frozen networks'
graph-free outputs within a step; :func:`make_attack_fn` is the ``ctx.attack_fn`` the method
calls; :func:`freeze` is the teacher contract.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..attacks import pgd_from_config
from ..methods import Batch, Method, StepContext, check_losses
from ..models import logits_and_features
from ..protocols import AttackConfig
from .graph import Backend, CapturedStep, WatchedContext
from .speed import SpeedPlan, autocast, uncompile_module
from .stats import EpochStats

__all__ = ["SharedForward", "TrainStep", "freeze", "make_attack_fn"]


def make_attack_fn(student: nn.Module, cfg: AttackConfig) -> Callable:
    """attack_fn(x, objective, attack=None): PGD with input-only gradients in the configured
    student mode; ``attack`` replaces the run's config for one call (a method's quirk)."""

    def attack_fn(
        x: Tensor, objective: Callable[[Tensor], Tensor], attack: AttackConfig | None = None
    ) -> Tensor:
        use = cfg if attack is None else attack
        was_training = student.training
        student.train(use.student_mode == "train")
        try:
            return pgd_from_config(x, objective, use)
        finally:
            student.train(was_training)

    return attack_fn


def freeze(model: nn.Module) -> nn.Module:
    """Teacher contract: eval mode, no parameter gradients, *not* under no_grad."""
    model.eval()
    model.requires_grad_(False)
    return model


# ------------------------------------------------------------------- teacher-output sharing


@dataclass(eq=False)  # identity semantics: entries hold tensors
class _Entry:
    x: Tensor  # held, so the object (and its memory) cannot be reused within the step
    version: int
    state: tuple
    logits: Tensor | None = None
    features: tuple[Tensor, Tensor] | None = None
    out_versions: tuple[int, ...] = ()


class SharedForward(nn.Module):
    """A frozen network whose graph-free outputs are shared within one training step.

    ``forward(x)`` and ``forward_features(x)`` return the memoised result when the same tensor
    object, unmodified since (same version counter), was forwarded earlier in the step in the
    same mode and autocast state; otherwise they forward. Calls that would build a graph (grad
    mode on and ``x.requires_grad``, or trainable parameters) always forward and are not
    stored. ``clear()`` (the trainer calls it at both ends of a step) drops everything.
    Attributes not defined here are looked up on the wrapped network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.train(net.training)
        self._entries: list[_Entry] = []
        self._frozen = True
        self.hits = 0  # shared forwards since construction (diagnostics, tests)
        self.clear()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = self._modules.get("net")
            if net is None:
                raise
            return getattr(net, name)

    def clear(self) -> None:
        self._entries = []
        self._frozen = not any(p.requires_grad for p in self.net.parameters())

    def _state(self, x: Tensor) -> tuple | None:
        if not self._frozen or (torch.is_grad_enabled() and x.requires_grad):
            return None  # the output carries a graph: never shared
        dev = x.device.type
        return (
            self.net.training,
            torch.is_autocast_enabled(dev),
            torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None,
        )

    def _find(self, x: Tensor, state: tuple) -> _Entry | None:
        for e in self._entries:
            if e.x is x and e.version == x._version and e.state == state:
                outs = [e.logits] if e.logits is not None else []
                if e.features is not None:
                    outs += list(e.features)
                if tuple(t._version for t in outs) != e.out_versions:
                    # a caller modified a shared output in place: forget the entry
                    self._entries = [o for o in self._entries if o is not e]
                    return None
                return e
        return None

    def _store(self, e: _Entry) -> None:
        outs = [e.logits] if e.logits is not None else []
        if e.features is not None:
            outs += list(e.features)
        e.out_versions = tuple(t._version for t in outs)
        if not any(other is e for other in self._entries):
            self._entries.append(e)

    def forward(self, x: Tensor) -> Tensor:
        state = self._state(x)
        if state is None:
            return self.net(x)
        e = self._find(x, state)
        if e is not None and e.logits is not None:
            self.hits += 1
            return e.logits
        out = self.net(x)
        if e is None:
            e = _Entry(x=x, version=x._version, state=state)
        e.logits = out
        self._store(e)
        return out

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        state = self._state(x)
        if state is None:
            return logits_and_features(self.net, x)
        e = self._find(x, state)
        if e is not None and e.features is not None:
            self.hits += 1
            return e.features
        logits, feats = logits_and_features(self.net, x)
        if e is None:
            e = _Entry(x=x, version=x._version, state=state)
        e.features = (logits, feats)
        if e.logits is None:
            e.logits = logits  # the same forward's logits serve a later plain call
        self._store(e)
        return logits, feats


# ---------------------------------------------------------------------------- one step


def _terms_ok(terms: Any) -> bool:
    """check_losses' structural rules (python only, no device sync)."""
    if not terms:
        return False
    for key, value in terms.items():
        if not key.replace("_", "").isalnum() or key != key.lower():
            return False
        if not isinstance(value, Tensor) or value.dim() != 0:
            return False
    return True


class TrainStep:
    """One optimisation step of the one trainer, with the speed plan applied.

    ``step(batch, epoch=, step=)`` computes the method's terms (under bf16 autocast if asked),
    checks their structure (snake_case keys, 0-dim tensors: host-side, no value read), adds
    them to the epoch's device-side :class:`EpochStats`, backpropagates their sum, checks the
    gradients for non-finite values on the device and steps the optimiser. Nothing reads a
    tensor value on the host: the trainer reads the stats once per epoch and stops the run,
    keeping the last good checkpoint, when a flag was raised. Returns the detached terms
    (with ``cuda_graph``, the graph's static outputs: read them before the next step).

    With ``plan.cuda_graph`` the step is driven by :class:`~ardbench.train.graph.CapturedStep`
    (warm-up, one capture, replays); ``graph_backend`` replaces the CUDA backend (tests).
    """

    def __init__(
        self,
        *,
        method: Method,
        method_name: str,
        student: nn.Module,
        teacher: nn.Module | None,
        extras: dict[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        attack_fn: Callable,
        attack_cfg: Any,
        plan: SpeedPlan,
        num_classes: int,
        total_epochs: int,
        features: Callable = logits_and_features,
        stats: EpochStats | None = None,
        graph_backend: Backend | None = None,
    ) -> None:
        self.method = method
        self.method_name = method_name
        self.student = student
        self.raw_teacher = teacher
        self.raw_extras = dict(extras)
        self.plan = plan
        share = plan.share_teacher
        self.teacher = SharedForward(teacher) if share and teacher is not None else teacher
        self.extras = {k: SharedForward(m) if share else m for k, m in extras.items()}
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.attack_fn = attack_fn
        self.attack_cfg = attack_cfg
        self.num_classes = num_classes
        self.total_epochs = total_epochs
        self.features = features
        self.stats = stats or EpochStats(torch.device(plan.device))
        self._compile_verified = not plan.compile
        self.graph = CapturedStep(self, graph_backend) if plan.cuda_graph else None

    def _shared(self) -> list[SharedForward]:
        nets = [self.teacher, *self.extras.values()]
        return [m for m in nets if isinstance(m, SharedForward)]

    def _clear(self) -> None:
        for m in self._shared():
            m.clear()

    def __call__(self, batch: Batch, *, epoch: int, step: int) -> dict[str, Tensor]:
        if self.graph is not None:
            return self.graph(batch, epoch=epoch, step=step)
        return self.eager(batch, epoch=epoch, step=step)

    def eager(self, batch: Batch, *, epoch: int, step: int) -> dict[str, Tensor]:
        """The step run eagerly (the plain path; the graph's warm-up and other shapes)."""
        if self._compile_verified:
            out = self._run(batch, epoch, step)
        else:
            out = self._first_compiled_step(batch, epoch, step)
        self.stats.count(len(batch.y))
        return out

    def _run(
        self, batch: Batch, epoch: int, step: int, reads: set[str] | None = None
    ) -> dict[str, Tensor]:
        """The step's computation; ``reads`` (capture only) collects the context fields
        that ``losses()`` read."""
        x = batch.x
        if self.plan.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = Batch(x=x, y=batch.y, index=batch.index)
        size = int(batch.y.shape[0])
        stats = self.stats
        fields = dict(
            epoch=epoch,
            total_epochs=self.total_epochs,
            step=step,
            attack=self.attack_cfg,
            attack_fn=self.attack_fn,
            features=self.features,
            log=lambda key, value: stats.log(key, value, size),
            num_classes=self.num_classes,
            extras=self.extras,
        )
        if reads is None:
            ctx = StepContext(**fields)
        else:
            ctx = WatchedContext(**fields)
            object.__setattr__(ctx, "reads", reads)
        self._clear()
        try:
            with autocast(self.plan):
                teacher = self.method.teacher_for(self.teacher)
                terms = self.method.losses(self.student, teacher, batch, ctx)
            if not _terms_ok(terms):
                check_losses(terms, self.method_name)  # raises with the contract's message
            stats.add(terms, size)
            total = cast(Tensor, sum(terms.values()))  # 0 + t1 + ...: a tensor
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            stats.check_grads(self.params)
            stats.end_step()
            self.optimizer.step()
        finally:
            self._clear()
        return {k: v.detach() for k, v in terms.items()}

    def _first_compiled_step(self, batch: Batch, epoch: int, step: int) -> dict[str, Tensor]:
        """Run the first step compiled; if the method needs a double backward (unsupported by
        AOTAutograd), restore what the failed attempt changed and rerun it eagerly."""
        modules = [self.student, self.method]
        buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        frames_before = _dynamo_frames()
        try:
            stats_before = self._stats_state()
            out = self._run(batch, epoch, step)
            self._note_suppressed_failures(frames_before)
        except RuntimeError as exc:
            if "double backward" not in str(exc):
                raise
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            self.optimizer.zero_grad(set_to_none=True)
            self._restore_stats(stats_before)
            for m in (self.student, self.raw_teacher, *self.raw_extras.values()):
                if m is not None:
                    uncompile_module(m)
            self.plan.compile = False
            note = (
                f"compile off: {self.method_name} needs a double backward, which "
                "torch.compile does not support; ran eagerly (set supports_compile = False "
                "on the method to skip the attempt)"
            )
            self.plan.notes.append(note)
            warnings.warn(note, RuntimeWarning, stacklevel=2)
            out = self._run(batch, epoch, step)
        self._compile_verified = True
        return out

    def _stats_state(self) -> tuple:
        st = self.stats
        tables = (st.sums, st.diag, st.term_bad)
        return (
            [{k: v.clone() for k, v in t.items()} for t in tables],
            st.grad_bad.clone(),
            st.first_bad.clone(),
            st.step.clone(),
            st.examples,
        )

    def _restore_stats(self, saved: tuple) -> None:
        """Undo what a failed first compiled attempt added to the epoch's sums."""
        st = self.stats
        tables, grad_bad, first_bad, step, examples = saved
        for live, old in zip((st.sums, st.diag, st.term_bad), tables, strict=True):
            for key in list(live):
                if key in old:
                    live[key].copy_(old[key])
                else:
                    del live[key]
        st.grad_bad.copy_(grad_bad)
        st.first_bad.copy_(first_bad)
        st.step.copy_(step)
        st.examples = examples

    def _note_suppressed_failures(self, before: tuple[int, int]) -> None:
        """With ``compile: auto`` dynamo suppresses the errors of graphs it cannot build and
        runs those frames eagerly; say so in the plan (hence the record), and record
        ``compile: false`` when no frame of the first step compiled at all."""
        total, ok = (a - b for a, b in zip(_dynamo_frames(), before, strict=True))
        failed = total - ok
        if failed <= 0:
            return
        if ok == 0:
            self.plan.compile = False
            note = (
                f"compile off: torch.compile could build none of the {failed} frames of the "
                "first step (errors suppressed under compile: auto; ran eagerly; "
                "train.compile=true shows the errors)"
            )
        else:
            note = (
                f"compile partial: {failed} of {total} frames of the first step could not be "
                "compiled and ran eagerly (train.compile=true shows the errors)"
            )
        self.plan.notes.append(note)
        warnings.warn(note, RuntimeWarning, stacklevel=3)

    def release(self) -> None:
        """Back to eager forwards (before evaluation, which stays uncompiled and fp32); the
        captured graph, if any, is freed."""
        if self.graph is not None:
            self.graph.release()
        self._clear()
        for m in (self.student, self.raw_teacher, *self.raw_extras.values()):
            if m is not None:
                uncompile_module(m)


def _dynamo_frames() -> tuple[int, int]:
    """dynamo's process-wide (frames it tried to convert, frames converted) counters."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"]), int(counters["frames"]["ok"])
