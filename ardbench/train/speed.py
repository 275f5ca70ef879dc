"""The trainer's speed features: what they do, when they are on, and the one training step.

Features that keep the computation (equal losses and gradients to float tolerance; each has an
equivalence test in ``tests/test_train_speed.py``), each a ``TrainConfig`` flag (``auto`` | ``true``
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

``cuda_graph``       the whole step (attack with its random start, teacher forwards, losses,
                     backward, optimiser step, the epoch's device-side sums) captured once as
                     one CUDA graph and replayed (``ardbench/train/graph.py``, which says how
                     and what was verified). ``auto``: on for CUDA unless the method opts out
                     (``supports_cuda_graph = False``); needs fused SGD, whose learning rate is
                     then a device tensor written in place by the schedule (:func:`set_lr`).
                     Off on the CPU whatever was asked. A step that cannot be captured runs
                     eagerly and the plan's notes say why.

Already part of the plain path and kept: data and augmentation on the device
(``data.DeviceLoader``, built once per epoch) and input-only gradients in the attacks
(``attacks.pgd``).

The numerics-changing feature is separate: ``amp: bf16`` runs the training step (attack and
loss) under bf16 autocast. Evaluation always runs in fp32, outside that context.

What each flag resolved to goes into every line of ``log.jsonl`` (``"speed"``) and into the
record (``record["hardware"]["speed"]``); ``config.json`` keeps what was asked (``auto``), so a
resumed run resolves again for the machine it runs on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..methods import Method
from ..protocols import TrainConfig

__all__ = [
    "SpeedPlan",
    "autocast",
    "compile_module",
    "compile_settings",
    "portable_state",
    "cudnn_settings",
    "make_optimizer",
    "optimizer_state",
    "param_groups",
    "prepare_models",
    "resolve_speed",
    "set_lr",
    "set_optimizer_impl",
    "uncompile_module",
]

# torch releases whose fused SGD takes the learning rate as a device tensor (PR #131065)
GRAPH_MIN_TORCH = (2, 5)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@dataclass
class SpeedPlan:
    """The resolved speed settings of a run (``auto`` replaced by the actual choice)."""

    device: str
    channels_last: bool = False
    compile: bool = False
    fused_optimizer: bool = False
    share_teacher: bool = True
    cudnn_benchmark: bool = False
    cuda_graph: bool = False
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
        # whole-step capture: CUDA only (resolved off on the CPU whatever was asked)
        cuda_graph=_pick(tc.cuda_graph, cuda) and cuda,
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
    if tc.cuda_graph is True and not cuda:
        plan.notes.append(f"cuda_graph off: CUDA graphs need a CUDA device (device {device})")
    if plan.cuda_graph and cls is not None and not getattr(cls, "supports_cuda_graph", True):
        plan.cuda_graph = False
        plan.notes.append(f"cuda_graph off: {name} opts out (supports_cuda_graph = False)")
    if plan.cuda_graph and not plan.fused_optimizer:
        if tc.cuda_graph is True:
            raise ConfigError(
                "train.cuda_graph=true needs the fused optimizer: a captured step reads the "
                "learning rate from a device tensor, which only SGD(fused=True) does without "
                "a host read",
                hint="set train.fused_optimizer=auto (or true), or train.cuda_graph=false",
            )
        plan.cuda_graph = False
        plan.notes.append("cuda_graph off: needs train.fused_optimizer (device-tensor lr)")
    if plan.cuda_graph and _torch_version() < GRAPH_MIN_TORCH:
        plan.cuda_graph = False
        plan.notes.append(
            f"cuda_graph off: torch {torch.__version__} has no fused SGD with a device-tensor "
            f"learning rate (needs >= {'.'.join(map(str, GRAPH_MIN_TORCH))})"
        )
    if plan.amp == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.amp=bf16 needs a GPU with bf16 support", hint="use train.amp=none")
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
        compiled = torch.compile(getattr(model, "forward_features"), **kwargs)  # noqa: B009
        setattr(model, "forward_features", compiled)  # noqa: B010 (nn.Module types it a Module)


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


GROUP_KEYS = ("lr_scale", "momentum", "weight_decay", "nesterov", "dampening")
"""Settings a method's own parameter group may carry (``Method.param_groups``)."""


def param_groups(student: nn.Module, method: Method, tc: TrainConfig) -> list[dict[str, Any]]:
    """The optimiser's groups: the student's parameters with the recipe's settings, joined by
    the method's plain groups (as one optimiser over both), then the method's groups that carry
    their own settings (``GROUP_KEYS``), each in its own group."""
    defaults = {
        "lr": tc.lr,
        "momentum": tc.momentum,
        "weight_decay": tc.weight_decay,
        "nesterov": tc.nesterov,
    }
    main: dict[str, Any] = {"params": list(student.parameters())}
    groups = [main]
    for group in method.param_groups(dict(defaults)):
        own = set(group) - {"params"}
        unknown = own - set(GROUP_KEYS)
        if unknown:
            raise ValueError(
                f"{type(method).__name__}.param_groups: unknown key(s) {sorted(unknown)}; a "
                f"group may set {', '.join(GROUP_KEYS)} (the lr follows the run's schedule: "
                "use lr_scale)"
            )
        if own:
            groups.append({**group, "params": list(group["params"])})
        else:
            main["params"].extend(group["params"])
    return groups


def _lr_value(lr: float | Tensor, plan: SpeedPlan) -> float | Tensor:
    """A captured step needs the learning rate in device memory (fused SGD reads it there at
    every replay); otherwise the plain float. float32: the fused kernel's tensor-lr type."""
    if plan.cuda_graph:
        value = float(lr) if isinstance(lr, Tensor) else lr
        return torch.tensor(value, dtype=torch.float32, device=plan.device)
    return float(lr) if isinstance(lr, Tensor) else lr


def make_optimizer(
    params: list[nn.Parameter] | list[dict[str, Any]], tc: TrainConfig, plan: SpeedPlan
):
    """The recipe's SGD; ``fused=True`` when the plan says so (the same update rule); with
    ``cuda_graph`` the learning rate is a device tensor (:func:`set_lr` writes it in place).

    ``params``: parameters, or groups from :func:`param_groups` (a group's ``lr_scale``
    multiplies the schedule's lr; :func:`set_lr` keeps applying it)."""
    kwargs: dict[str, Any] = {}
    if plan.fused_optimizer:
        kwargs["fused"] = True
    groups: list[Any] = [  # all parameters or all groups, as given
        {**g, "lr": _lr_value(tc.lr * g["lr_scale"], plan)}
        if isinstance(g, dict) and "lr_scale" in g
        else g
        for g in params
    ]
    return torch.optim.SGD(
        groups,
        lr=_lr_value(tc.lr, plan),
        momentum=tc.momentum,
        weight_decay=tc.weight_decay,
        nesterov=tc.nesterov,
        **kwargs,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's learning rate for the next steps: written *in place* into a tensor lr
    (a captured step keeps reading the same device memory, so no re-capture is needed),
    assigned otherwise. No host read."""
    for group in optimizer.param_groups:
        value = lr * group.get("lr_scale", 1.0)  # a method's own group (Method.param_groups)
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with plain-float learning rates, so a checkpoint written by a
    captured run (device-tensor lr) resumes anywhere; one host read per tensor lr (epoch end).
    The value is informative: the trainer sets the schedule's lr at every epoch start."""
    state = optimizer.state_dict()
    state["param_groups"] = [
        {**g, "lr": float(g["lr"])} if isinstance(g["lr"], Tensor) else g
        for g in state["param_groups"]
    ]
    return state


def set_optimizer_impl(optimizer: torch.optim.Optimizer, plan: SpeedPlan) -> None:
    """After ``load_state_dict``: use this run's implementation, not the saved run's (fused or
    not; the learning rate a device tensor for a captured step, a float otherwise)."""
    for group in optimizer.param_groups:
        group["fused"] = bool(plan.fused_optimizer)
        if plan.fused_optimizer:
            group["foreach"] = None
        group["lr"] = _lr_value(group["lr"], plan)


def autocast(plan: SpeedPlan) -> contextlib.AbstractContextManager:
    """bf16 autocast for the training step when ``amp == "bf16"``, else nothing. With
    ``cuda_graph`` autocast's weight-cast cache is off, as PyTorch's own graph API requires
    (``torch.cuda.make_graphed_callables`` refuses it): conservative, since here the context is
    entered and left inside the capture; it costs a re-cast of the weights per forward, bf16
    only, and changes no value."""
    if plan.amp == "bf16":
        return torch.autocast(
            torch.device(plan.device).type,
            dtype=torch.bfloat16,
            cache_enabled=not plan.cuda_graph,
        )
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
