"""``RunConfig``: a resolved recipe (method + method config + protocol + teacher + student).

It is what a run saves as ``config.json`` and hashes into its record. ``from_dict`` reads the
configs of every ardbench version (radii written as floats before radii were fractions; no
``protocol`` or ``checkpoint`` before protocols had names).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .eps import Eps
from .identity import computation_dict, config_hash, recipe_hash, row_hash
from .paper import PaperFigures
from .sections import (
    SECTIONS,
    AttackConfig,
    CheckpointConfig,
    EvalConfig,
    TrainConfig,
    build_section,
    coerce,
    section_dict,
    unknown_key,
)

__all__ = ["TOP_LEVEL", "RunConfig", "computation_dict"]


@dataclass(frozen=True)
class RunConfig:
    method: str
    method_config: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None  # the named protocol the run follows (values may be modified)
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    teacher: str | None = None
    student: str = "resnet18"
    attack: AttackConfig = field(default_factory=AttackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    device: str = "auto"
    recipe: str | None = None  # provenance: the recipe (file or name) that produced this config
    paper: PaperFigures | None = None  # the published figures this recipe sets beside ours

    @property
    def eval_eps(self) -> Eps:
        """The evaluation radius: ``eval.eps``, else the training threat model's."""
        return self.eval.eps if self.eval.eps is not None else self.attack.eps

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECTIONS:
                value = section_dict(value)
            elif isinstance(value, PaperFigures):
                value = value.to_dict()
            elif isinstance(value, dict):
                value = json.loads(json.dumps(value))
            out[f.name] = value
        return out

    def config_hash(self) -> str:
        """sha256 (16 hex) over everything that defines the computation, seed included
        (:func:`ardbench.protocols.identity.config_hash`)."""
        return config_hash(self.to_dict())

    def row_hash(self) -> str:
        """The config part of this run's leaderboard row
        (:func:`ardbench.protocols.identity.row_hash`): runs with the same row hash differ
        only by seed."""
        return row_hash(self.to_dict())

    def recipe_hash(self) -> str:
        """The Python API's older name for :meth:`row_hash` (kept for compatibility)."""
        return recipe_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "run config") -> RunConfig:
        """Strict: an unknown key is an error naming it."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(d).__name__}")
        if "method" not in d:
            raise ConfigError(f"{where} names no method", hint="pass --method NAME")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in TOP_LEVEL:
                raise unknown_key(key, TOP_LEVEL, where)
            if key in SECTIONS:
                kwargs[key] = build_section(SECTIONS[key], value or {}, key)
            elif key == "paper":
                kwargs[key] = None if value is None else PaperFigures.from_dict(value)
            else:
                kwargs[key] = coerce(RunConfig, key, value, where)
        return cls(**kwargs)


TOP_LEVEL = tuple(f.name for f in dataclasses.fields(RunConfig))
