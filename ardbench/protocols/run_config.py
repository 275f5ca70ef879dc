"""``RunConfig``: a resolved recipe (method + method config + protocol + teacher + student).

It is what a run saves as ``config.json`` and hashes into its record. ``from_dict`` reads the
configs of every ardbench version (radii written as floats before radii were fractions; no
``protocol`` or ``checkpoint`` before protocols had names).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .eps import Eps
from .paper import PaperFigures
from .sections import (
    RUN_OPTION_KEYS,
    SECTIONS,
    AttackConfig,
    CheckpointConfig,
    EvalConfig,
    TrainConfig,
    build_section,
    coerce,
    drop_later_defaults,
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
        (provenance, paths, the device and the speed switches excluded)."""
        d = computation_dict(self.to_dict())
        for k in ("recipe", "paper", "data_dir", "download", "device", "protocol"):
            d.pop(k, None)
        return _digest(d, 16)

    def recipe_hash(self) -> str:
        """sha256 (12 hex) of what makes runs one leaderboard row: the computation without the
        seed, the determinism switch and what the table already fixes (data, teacher and
        student are the table's key). Runs with the same hash differ only by seed."""
        d = computation_dict(self.to_dict())
        for k in ("recipe", "paper", "data_dir", "download", "device", "protocol"):
            d.pop(k, None)
        for k in ("dataset", "teacher", "student"):
            d.pop(k, None)
        d.get("train", {}).pop("seed", None)
        d.get("train", {}).pop("deterministic", None)
        # AutoAttack's batch moves its numbers only through per-batch random inits
        d.get("eval", {}).pop("aa_batch_size", None)
        return _digest(d, 12)

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


def computation_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without what cannot change the numbers, for hashing: the speed
    features that keep the computation (SPEED_KEYS; ``amp: none``; ``eval.batch_size``, whose
    columns draw their random starts per point), the default checkpoint rule and section keys
    left at None (so an optional key added in a later version hashes like its absence)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for section in SECTIONS:
        sub = out.get(section)
        if isinstance(sub, dict):
            for key in RUN_OPTION_KEYS:
                sub.pop(key, None)
            if section == "eval":
                sub.pop("batch_size", None)
            drop_later_defaults(section, sub)
            for key in [k for k, v in sub.items() if v is None]:
                sub.pop(key)
    if out.get("checkpoint") in ({"rule": "last"}, {}):
        out.pop("checkpoint")
    return out


def _digest(d: dict[str, Any], n: int) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
