"""The trainer's speed features: what they do, when they are on, and the one training step.

Features that keep the computation (equal losses and gradients to float tolerance; each has an
equivalence test in ``tests/test_speed.py``), each a ``TrainConfig`` flag (``auto`` | ``true``
| ``false``) resolved per device by :func:`resolve_speed`:

``channels_last``    weights and batches in NHWC (``auto``: on for CUDA, where cuDNN's NHWC
                     kernels are faster; off on CPU).
``compile``          ``torch.compile`` of the student's and the frozen networks' forwards
                     (``nn.Module.compile``, so state dicts and modes are untouched; also
                     ``forward_features``). ``auto``: on for CUDA, off on CPU (where compiling
                     costs more than a short run saves). A method whose loss needs a double
                     backward (KDIGA's input-gradient alignment: ``create_graph=True``, which
                     AOTAutograd does not support) runs eagerly: either it says so with the
                     class attribute ``supports_compile = False``, or the first compiled step
                     fails with that error, the step's state is restored and it reruns eagerly.
``fused_optimizer``  ``SGD(fused=True)`` (``auto``: on for CUDA); same update rule.
``share_teacher``    the frozen networks' outputs memoised for one step: a second call on the
                     *same input tensor* (same object, not modified in place since) in the same
                     autocast state returns the first call's logits (and features) instead of
                     forwarding again. Only calls that build no graph are memoised (grad mode
                     off, or an input that needs no gradient through frozen weights), so
                     KDIGA's input gradients through the teacher are computed as before. On
                     everywhere (``auto``); a method opts out with ``share_teacher_outputs =
                     False``. The built-in methods already compute each teacher input once, so
                     today it saves a forward only for methods that call the teacher twice.
``cudnn_benchmark``  cuDNN autotuning (``auto``: on for CUDA unless ``train.deterministic``).

Already part of the plain path and kept: data and augmentation on the device
(``data.DeviceLoader``) and input-only gradients in the attacks (``attacks.pgd``). CUDA graphs
are not used: the attack is a closure the method builds at every step, which a static graph
capture does not fit without restructuring the method contract.

The numerics-changing feature is separate: ``amp: bf16`` runs the training step (attack and
loss) under bf16 autocast. Evaluation always runs in fp32, outside that context.

What each flag resolved to goes into every line of ``log.jsonl`` (``"speed"``) and into the
record (``record["hardware"]["speed"]``); ``config.json`` keeps what was asked (``auto``), so a
resumed run resolves again for the machine it runs on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .methods import Batch, Method, StepContext, check_losses
from .models import logits_and_features

__all__ = [
    "SharedForward",
    "SpeedPlan",
    "TrainStep",
    "autocast",
    "compile_module",
    "compile_settings",
    "portable_state",
    "cudnn_settings",
    "make_optimizer",
    "prepare_models",
    "resolve_speed",
    "set_optimizer_impl",
    "uncompile_module",
]


@dataclass
class SpeedPlan:
    """The resolved speed settings of a run (``auto`` replaced by the actual choice)."""

    device: str
    channels_last: bool = False
    compile: bool = False
    fused_optimizer: bool = False
    share_teacher: bool = True
    cudnn_benchmark: bool = False
    amp: str = "none"
    # PyTorch's TF32 switches as the run found them (not changed by ardbench): on CUDA, cuDNN
    # convolutions default to TF32, so "fp32" training there is TF32 convolutions, as in the
    # official scripts; recorded so that the record says so
    conv_tf32: bool = False
    matmul_tf32: bool = False
    notes: list[str] = field(default_factory=list)  # why a feature is off, fallbacks taken

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d


def _pick(value: Any, auto: bool) -> bool:
    return auto if value == "auto" else bool(value)


def resolve_speed(
    tc: TrainConfig, device: torch.device | str, method: Method | type[Method] | None = None
) -> SpeedPlan:
    """Resolve ``auto`` flags for ``device``; honour a method's opt-outs (class attributes
    ``supports_compile`` and ``share_teacher_outputs``, both True when absent)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    cls = method if isinstance(method, type) or method is None else type(method)
    plan = SpeedPlan(
        device=str(device),
        channels_last=_pick(tc.channels_last, cuda),
        compile=_pick(tc.compile, cuda),
        fused_optimizer=_pick(tc.fused_optimizer, cuda),
        share_teacher=_pick(tc.share_teacher, True),
        cudnn_benchmark=_pick(tc.cudnn_benchmark, cuda and not tc.deterministic) and cuda,
        amp=tc.amp,
        conv_tf32=cuda and bool(torch.backends.cudnn.allow_tf32),
        matmul_tf32=cuda and bool(torch.backends.cuda.matmul.allow_tf32),
    )
    name = getattr(cls, "registry_name", "") or getattr(cls, "__name__", "method")
    if plan.compile and cls is not None and not getattr(cls, "supports_compile", True):
        plan.compile = False
        plan.notes.append(f"compile off: {name} opts out (supports_compile = False)")
    if plan.share_teacher and cls is not None and not getattr(cls, "share_teacher_outputs", True):
        plan.share_teacher = False
        plan.notes.append(f"share_teacher off: {name} opts out (share_teacher_outputs = False)")
    if plan.amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("train.amp=bf16 needs a GPU with bf16 support; use train.amp=none")
    return plan


# ------------------------------------------------------------------------------ the models


def compile_module(model: nn.Module, **kwargs: Any) -> None:
    """``torch.compile`` the module's ``__call__`` (and ``forward_features``) in place.

    Static shapes by default (``dynamic=False``): a run sees two batch sizes (full batches and
    the epoch's last one), and automatic dynamic shapes would serve the full batches from a
    shape-generic graph after the first short batch.
    """
    kwargs.setdefault("dynamic", False)
    model.compile(**kwargs)
    ff = getattr(type(model), "forward_features", None)
    if callable(ff):
        # an instance attribute shadows the method; uncompile_module deletes it again
        model.forward_features = torch.compile(model.forward_features, **kwargs)


def uncompile_module(model: nn.Module) -> None:
    """Undo :func:`compile_module`: eager forwards again (weights and modes untouched)."""
    model._compiled_call_impl = None
    model.__dict__.pop("forward_features", None)


def prepare_models(plan: SpeedPlan, *models: nn.Module | None) -> None:
    """Apply ``channels_last`` and ``compile`` to the given networks (in place)."""
    for model in models:
        if model is None:
            continue
        if plan.channels_last:
            model.to(memory_format=torch.channels_last)
        if plan.compile:
            compile_module(model)


def portable_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of detached, NCHW-contiguous CPU tensors, so saved files (and the sha256
    in the record) do not depend on ``channels_last`` or on the device that trained the run,
    and load with a plain ``torch.load`` on a machine without a GPU."""
    return {
        k: v.detach().to("cpu").contiguous() if isinstance(v, Tensor) else v
        for k, v in state.items()
    }


def make_optimizer(params: list[nn.Parameter], tc: TrainConfig, plan: SpeedPlan):
    """The recipe's SGD; ``fused=True`` when the plan says so (the same update rule)."""
    kwargs: dict[str, Any] = {}
    if plan.fused_optimizer:
        kwargs["fused"] = True
    return torch.optim.SGD(
        params,
        lr=tc.lr,
        momentum=tc.momentum,
        weight_decay=tc.weight_decay,
        nesterov=tc.nesterov,
        **kwargs,
    )


def set_optimizer_impl(optimizer: torch.optim.Optimizer, plan: SpeedPlan) -> None:
    """After ``load_state_dict``: use this run's implementation, not the saved run's."""
    for group in optimizer.param_groups:
        group["fused"] = bool(plan.fused_optimizer)
        if plan.fused_optimizer:
            group["foreach"] = None


def autocast(plan: SpeedPlan) -> contextlib.AbstractContextManager:
    """bf16 autocast for the training step when ``amp == "bf16"``, else nothing."""
    if plan.amp == "bf16":
        return torch.autocast(torch.device(plan.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def cudnn_settings(plan: SpeedPlan, deterministic: bool = False) -> Iterator[None]:
    """cuDNN autotuning, and with ``train.deterministic`` deterministic algorithms
    (``torch.use_deterministic_algorithms(warn_only=True)``, ``cudnn.deterministic``), for the
    duration of training; the process's settings are restored afterwards."""
    before = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    if torch.device(plan.device).type == "cuda":
        torch.backends.cudnn.benchmark = bool(plan.cudnn_benchmark)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])


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

    ``step(batch, epoch=, step=, log=)`` computes the method's terms (under bf16 autocast if
    asked), their sum, backpropagates, checks the terms (snake_case keys, 0-dim, finite: the
    contract of ``check_losses``, with one device synchronisation for all of them) and steps
    the optimiser. A non-finite term raises before the weights change. Returns the terms and
    their float values (with ``"loss"``, the sum).
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
        self.attack_fn = attack_fn
        self.attack_cfg = attack_cfg
        self.num_classes = num_classes
        self.total_epochs = total_epochs
        self.features = features
        self._compile_verified = not plan.compile

    def _shared(self) -> list[SharedForward]:
        nets = [self.teacher, *self.extras.values()]
        return [m for m in nets if isinstance(m, SharedForward)]

    def _clear(self) -> None:
        for m in self._shared():
            m.clear()

    def __call__(
        self, batch: Batch, *, epoch: int, step: int, log: Callable[[str, float], None]
    ) -> tuple[dict[str, Tensor], dict[str, float]]:
        if self._compile_verified:
            return self._run(batch, epoch, step, log)
        return self._first_compiled_step(batch, epoch, step, log)

    def _run(self, batch: Batch, epoch: int, step: int, log: Callable) -> tuple:
        x = batch.x
        if self.plan.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        batch = Batch(x=x, y=batch.y, index=batch.index)
        ctx = StepContext(
            epoch=epoch,
            total_epochs=self.total_epochs,
            step=step,
            attack=self.attack_cfg,
            attack_fn=self.attack_fn,
            features=self.features,
            log=log,
            num_classes=self.num_classes,
            extras=self.extras,
        )
        self._clear()
        try:
            with autocast(self.plan):
                terms = self.method.losses(self.student, self.teacher, batch, ctx)
            if not _terms_ok(terms):
                check_losses(terms, self.method_name)  # raises with the contract's message
            total = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            # one synchronisation for every value; a non-finite term stops before the update
            stacked = torch.stack([v.detach().float() for v in (*terms.values(), total)])
            flat = stacked.tolist()
            if not all(v == v and abs(v) != float("inf") for v in flat):
                check_losses(terms, self.method_name)
            self.optimizer.step()
        finally:
            self._clear()
        values = dict(zip(terms, flat[:-1], strict=True))
        values["loss"] = flat[-1]
        return terms, values

    def _first_compiled_step(self, batch: Batch, epoch: int, step: int, log: Callable) -> tuple:
        """Run the first step compiled; if the method needs a double backward (unsupported by
        AOTAutograd), restore what the failed attempt changed and rerun it eagerly."""
        modules = [self.student, self.method]
        buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        frames_before = _dynamo_frames()
        try:
            out = self._run(batch, epoch, step, log)
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
            out = self._run(batch, epoch, step, log)
        self._compile_verified = True
        return out

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
        """Back to eager forwards (before evaluation, which stays uncompiled and fp32)."""
        self._clear()
        for m in (self.student, self.raw_teacher, *self.raw_extras.values()):
            if m is not None:
                uncompile_module(m)


def _dynamo_frames() -> tuple[int, int]:
    """dynamo's process-wide (frames it tried to convert, frames converted) counters."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"]), int(counters["frames"]["ok"])


@contextlib.contextmanager
def compile_settings(plan: SpeedPlan, requested: Any) -> Iterator[None]:
    """dynamo settings for the duration of a compiled run (restored afterwards).

    - ``recompile_limit`` raised to 64: a run legitimately needs one graph per (network, BN
      mode, grad mode, batch size: the last batch of an epoch is smaller), and the default of 8
      per code object is reached by a student and a teacher of the same class (all of them
      share ``forward``), after which dynamo silently runs eagerly.
    - with ``compile: auto``, a graph torch.compile cannot build runs eagerly (dynamo's
      ``suppress_errors``) instead of stopping the run; an explicit ``true`` keeps the errors.
    """
    if not plan.compile:
        yield
        return
    import torch._dynamo

    cfg = torch._dynamo.config
    before = (cfg.suppress_errors, cfg.recompile_limit)
    cfg.recompile_limit = max(cfg.recompile_limit, 64)
    if requested == "auto":
        cfg.suppress_errors = True
    try:
        yield
    finally:
        cfg.suppress_errors, cfg.recompile_limit = before
