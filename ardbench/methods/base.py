"""The method contract: what a method owns (its objective) and what the trainer gives it.

A method is an ``nn.Module`` so that its own parameters (projectors, peers) are optimised with
the student and saved in checkpoints. It never runs the optimiser, never decides the threat
model and never touches the data pipeline: the trainer does, from the run's recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..protocols import AttackConfig, ConfigError, coerce
from ..registry import Registry

Objective = Callable[[Tensor], Tensor]
"""objective(x_adv) -> scalar to *maximise*; the closure calls whatever networks it needs."""

AttackFn = Callable[..., Tensor]
"""attack_fn(x, objective, attack=None) -> detached x_adv inside the eps-ball and [0,1].

``attack``: an ``AttackConfig`` to use instead of the run's (``ctx.attack``) for this call, e.g. a
method's documented quirk that attacks with other settings; the student's BatchNorm mode is
still the one that config names."""

FeaturesFn = Callable[[nn.Module, Tensor], "tuple[Tensor, Tensor]"]
"""features(model, x) -> (logits, penultimate pooled features), one forward."""


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's Config. Defaults reproduce the official code, quirks included."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "method_config") -> MethodConfig:
        kwargs = {k: coerce(cls, k, v, where) for k, v in values.items()}
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:  # a Config's own checks (__post_init__)
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }


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


class Method(nn.Module):
    """Base class of every distillation / adversarial-training objective.

    Subclasses set ``Config`` (a frozen ``MethodConfig`` dataclass) and implement ``losses``.
    Class attributes describe the method for the leaderboard and the trainer:

    - ``needs_teacher``: a robust teacher is required (``--teacher``).
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

    def __init__(self, config: MethodConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} expects {self.Config.__qualname__}")
        self.config = config

    def setup(
        self,
        *,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        feature_dims: tuple[int, int | None],
        student_factory: Callable[[], nn.Module] | None = None,
    ) -> None:
        """Build method-owned parameters (called once, before the optimiser is made).

        ``feature_dims`` = (student penultimate width, teacher penultimate width or None).
        ``student_factory()`` builds a fresh, randomly initialised network of the student's
        architecture on the student's device, initialised as the architecture initialises
        itself (PeerAiD's peer); None where the caller cannot build one.
        """

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
        self, student: nn.Module, teacher: nn.Module | None, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
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


METHODS: Registry[type[Method]] = Registry("method", entry_point_group="ardbench.methods")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method available as ``--method name``."""
    return METHODS.register(name)


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


def build_method(name: str, overrides: Mapping[str, Any] | None = None) -> Method:
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
