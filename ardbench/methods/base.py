"""The method contract: what a method owns (its objective) and what the trainer gives it.

A method is an ``nn.Module`` so that its own parameters (projectors, peers) are optimised with
the student and saved in checkpoints. It never runs the optimiser, never decides the threat
model and never touches the data pipeline: the trainer does, from the run's recipe.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..errors import ConfigError
from ..protocols import AttackConfig
from ..registry import Registry
from .config import MethodConfig

__all__ = [
    "METHODS",
    "AttackFn",
    "Batch",
    "FeaturesFn",
    "Method",
    "MethodConfig",
    "Objective",
    "SetupContext",
    "StepContext",
    "build_method",
    "check_losses",
    "get_method",
    "register_method",
]

Objective = Callable[[Tensor], Tensor]
"""objective(x_adv) -> scalar to *maximise*; the closure calls whatever networks it needs."""

AttackFn = Callable[..., Tensor]
"""attack_fn(x, objective, attack=None) -> detached x_adv inside the eps-ball and [0,1].

``attack``: an ``AttackConfig`` to use instead of the run's (``ctx.attack``) for this call, e.g. a
method's documented quirk that attacks with other settings; the student's BatchNorm mode is
still the one that config names."""

FeaturesFn = Callable[[nn.Module, Tensor], "tuple[Tensor, Tensor]"]
"""features(model, x) -> (logits, penultimate pooled features), one forward."""


def _no_log(name: str, value: Tensor | float) -> None:
    return None


@dataclass
class StepContext:
    """What the trainer passes to ``Method.losses`` at every step (constructible in tests)."""

    epoch: int
    total_epochs: int
    step: int
    attack: AttackConfig
    attack_fn: AttackFn
    features: FeaturesFn
    # detached diagnostics, averaged per example over the epoch; pass tensors as they are
    # (never float(t): that is a host read, forbidden in losses())
    log: Callable[[str, Tensor | float], None] = _no_log
    num_classes: int = 10
    extras: dict[str, nn.Module] = field(default_factory=dict)  # e.g. IAD-II natural teacher


@dataclass(frozen=True)
class SetupContext:
    """What ``Method.build`` gets, once, before the optimiser is made.

    ``feature_dims`` = (student penultimate width, teacher penultimate width or None).
    ``student_factory()`` builds a fresh, randomly initialised network of the student's
    architecture on the student's device, initialised as the architecture initialises itself
    (PeerAiD's peer); None where the caller cannot build one.
    """

    student: nn.Module
    teacher: nn.Module | None
    num_classes: int
    feature_dims: tuple[int, int | None]
    student_factory: Callable[[], nn.Module] | None = None


class NoTeacher(nn.Module):
    """What a method with ``needs_teacher = False`` gets as its teacher: calling it is a bug."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError(f"{self.method} declares needs_teacher = False but called the teacher")


C = TypeVar("C", bound=MethodConfig)


def _checks_teacher(losses: Callable[..., dict[str, Tensor]]) -> Callable[..., dict[str, Tensor]]:
    """``losses`` behind the base's teacher rule (see ``Method.teacher_for``)."""

    @functools.wraps(losses)
    def run(
        self: Method[Any], student: nn.Module, teacher: nn.Module | None, *args: Any, **kw: Any
    ) -> dict[str, Tensor]:
        return losses(self, student, self.teacher_for(teacher), *args, **kw)

    run.__ardbench_checked__ = True  # type: ignore[attr-defined]
    return run


class Method(nn.Module, Generic[C]):
    """Base class of every distillation / adversarial-training objective.

    A subclass names its Config as the type argument, ``class RSLAD(Method[RSLADConfig])``
    (so ``self.config`` is typed), and implements ``losses``; the base sets ``Config``,
    checks every config key (``MethodConfig``) and the teacher rule. Class attributes describe
    the method for the leaderboard and the trainer:

    - ``needs_teacher``: a robust teacher is required (``--teacher``); ``losses`` called
      without one stops with a one-line error before the method's code runs.
    - ``teacher_in_attack``: the inner maximisation calls the teacher (shown on the leaderboard).
    - ``teacherless_note``: what the leaderboard says of a method without a teacher (default:
      a reference row, as natural, PGD-AT and TRADES are).
    - ``paper``: citation shown in listings.

    Host reads: ``losses`` and the attack objectives it builds must not read tensor values on
    the host (no ``.item()``, ``.tolist()``, ``float(t)``, ``bool(t)``, python ``if`` on a
    tensor): on a GPU each is a synchronisation. Keep per-step state in registered buffers and
    update it with tensor operations (``torch.where``, in-place ``copy_``); buffers are saved in
    checkpoints with the method's ``state_dict``.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    registry_name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    teacher_in_attack: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    unofficial: ClassVar[bool] = False  # no official code: the leaderboard says so
    teacherless_note: ClassVar[str] = "no teacher (reference row)"
    # speed features (ardbench/train/speed.py) a method can opt out of:
    supports_compile: ClassVar[bool] = True  # False: never torch.compile (e.g. double backward)
    share_teacher_outputs: ClassVar[bool] = True  # False: no memo of no-grad teacher calls
    # False: never capture the step as a CUDA graph (ardbench/train/graph.py), e.g. a method
    # whose losses() keeps Python state that changes from step to step
    supports_cuda_graph: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is Method:
                (config,) = typing.get_args(base)
                if isinstance(config, type) and issubclass(config, MethodConfig):
                    nested = cls.__dict__.get("Config")
                    if nested is not None and nested is not config:
                        raise TypeError(
                            f"{cls.__qualname__}: Config {nested.__qualname__} is not the "
                            f"type argument {config.__qualname__}; drop one"
                        )
                    cls.Config = config
        own = cls.__dict__.get("losses")
        if own is not None and not getattr(own, "__ardbench_checked__", False):
            cls.losses = _checks_teacher(own)  # type: ignore[method-assign]

    def __init__(self, config: C | None = None) -> None:
        super().__init__()
        if config is None:
            config = cast(C, self.Config())
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} expects {self.Config.__qualname__}")
        self.config: C = config

    def teacher_for(self, teacher: nn.Module | None) -> nn.Module:
        """The teacher ``losses`` receives: the given one; for a method with
        ``needs_teacher = False`` given none, a stand-in that fails if called. A method that
        needs a teacher and gets none stops here with a one-line error."""
        if teacher is not None:
            return teacher
        name = self.registry_name or type(self).__name__
        if self.needs_teacher:
            raise ConfigError(f"{name} needs a teacher", hint="pass --teacher MODEL_SPEC")
        return NoTeacher(name)

    def setup(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        feature_dims: tuple[int, int | None],
        student_factory: Callable[[], nn.Module] | None = None,
    ) -> None:
        """Called once by the trainer before the optimiser is made; calls :meth:`build`."""
        self.build(SetupContext(student, teacher, num_classes, feature_dims, student_factory))

    def build(self, ctx: SetupContext) -> None:
        """Build method-owned parameters (projectors, peers) from ``ctx``; default: none."""

    def extra_models(self) -> dict[str, str | None]:
        """Extra frozen networks this config needs, as {name: model spec} (e.g. IAD-II).

        A spec of None names a network the config needs but was not given: the trainer stops
        with a message naming it (the contract check still supplies a tiny one).
        """
        return {}

    def param_groups(self, defaults: dict[str, Any]) -> list[dict[str, Any]]:
        """Optimiser parameter groups of the method's own parameters.

        ``defaults``: the recipe's optimiser settings (``lr``, ``momentum``, ``weight_decay``,
        ``nesterov``). A group ``{"params": [...]}`` alone joins the student's group (the
        recipe's settings, one optimiser as before); a group with other keys gets its own
        settings: ``lr_scale`` (its learning rate is the run's scheduled lr times this),
        ``momentum``, ``weight_decay``, ``nesterov``, ``dampening``. The lr itself always
        follows the run's schedule, so a group cannot set ``lr``.
        """
        params = list(self.parameters())
        return [{"params": params}] if params else []

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        """The method's loss terms for one batch (see the module docstring's contract).

        Callers may pass ``teacher=None``: the base then applies :meth:`teacher_for`, so
        ``teacher`` is always a module here."""
        raise NotImplementedError

    def capture_key(self, epoch: int) -> Hashable:
        """What the Python of ``losses()`` depends on at 0-based ``epoch``, for the captured step.

        A CUDA graph replays the kernels the step launched when it was captured: Python
        branches, and Python numbers baked into kernels, are frozen at capture. The trainer
        captures again whenever this key changes. The default (a constant) says: the same
        computation every epoch. A method whose ``losses()`` branches on ``ctx.epoch`` returns
        what the branch depends on (IAD: ``epoch >= begin``). A method that reads ``ctx.epoch``
        without overriding this is re-captured every epoch (detected at capture); one that
        reads ``ctx.step`` runs eagerly.
        """
        return None


METHODS: Registry[type[Method[Any]]] = Registry("method", entry_point_group="ardbench.methods")


M = TypeVar("M", bound="type[Method[Any]]")


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a Method available as ``--method name``."""
    register = METHODS.register(name)

    def decorator(cls: M) -> M:
        register(cls)
        if cls.Config is not MethodConfig and not cls.Config.where:
            cls.Config.where = f"method_config of {name!r}"
        return cls

    return decorator


def get_method(name: str) -> type[Method[Any]]:
    return METHODS.get(name)


def build_method(name: str, overrides: Mapping[str, Any] | None = None) -> Method[Any]:
    cls = get_method(name)
    cfg = cls.Config.from_dict(overrides or {}, where=f"method_config of {name!r}")
    return cls(cfg)


def check_losses(terms: Mapping[str, Tensor], method: str = "method") -> None:
    """The contract on returned terms: snake_case keys, 0-dim, finite tensors."""
    if not terms:
        raise ValueError(f"{method}.losses returned no terms")
    for key, value in terms.items():
        if not key.replace("_", "").isalnum() or key != key.lower():
            raise ValueError(f"{method}: loss key {key!r} is not snake_case")
        if not isinstance(value, Tensor) or value.dim() != 0:
            raise ValueError(f"{method}: loss {key!r} must be a 0-dim tensor")
        if not torch.isfinite(value.detach()):
            raise FloatingPointError(f"{method}: loss {key!r} is not finite ({value.item()})")
