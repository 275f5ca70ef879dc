"""The method contract: what a method owns (its objective) and what the trainer gives it.

A method is an ``nn.Module`` so that its own parameters (projectors, peers) are optimised with
the student and saved in checkpoints. It never runs the optimiser, never decides the threat
model and never touches the data pipeline: the trainer does, from the run's recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..protocols import AttackConfig, ConfigError, coerce
from ..registry import Registry

Objective = Callable[[Tensor], Tensor]
"""objective(x_adv) -> scalar to *maximise*; the closure calls whatever networks it needs."""

AttackFn = Callable[[Tensor, Objective], Tensor]
"""attack_fn(x, objective) -> detached x_adv inside the run's eps-ball and [0,1]."""

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
    - ``paper``: citation shown in listings.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    registry_name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    teacher_in_attack: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    unofficial: ClassVar[bool] = False  # no official code: the leaderboard says so
    # speed features (ardbench/train/speed.py) a method can opt out of:
    supports_compile: ClassVar[bool] = True  # False: never torch.compile (e.g. double backward)
    share_teacher_outputs: ClassVar[bool] = True  # False: no memo of no-grad teacher calls

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
    ) -> None:
        """Build method-owned parameters (called once, before the optimiser is made).

        ``feature_dims`` = (student penultimate width, teacher penultimate width or None).
        """

    def extra_models(self) -> dict[str, str]:
        """Extra frozen networks this config needs, as {name: model spec} (e.g. IAD-II)."""
        return {}

    def losses(
        self, student: nn.Module, teacher: nn.Module | None, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        raise NotImplementedError


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
