"""What makes two runs comparable: the threat model, the training protocol, the evaluation.

- :class:`Protocol` and the named protocols (``standard-cifar10``, the small track, the papers'
  faithful protocols): ``ardbench list protocols``.
- The typed sections a protocol and a run are made of (``AttackConfig``, ``TrainConfig``,
  ``EvalConfig``, ``CheckpointConfig``), radii as exact fractions (:class:`Eps`).
- :class:`RunConfig`: a resolved recipe (``ardbench.recipes`` resolves them).
"""

from __future__ import annotations

from ..errors import ConfigError
from .eps import Eps, format_eps, parse_eps, parse_number
from .identity import config_hash, protocol_identity, recipe_hash, row_hash
from .paper import PaperFigures
from .protocol import Protocol, derive, identity_of, protocol_changes
from .registered import (
    PROTOCOLS,
    all_protocols,
    faithful_protocol,
    get_protocol,
    protocol_ref,
    register_protocol,
)
from .run_config import RunConfig, computation_dict
from .sections import (
    SECTIONS,
    SPEED_KEYS,
    AttackConfig,
    CheckpointConfig,
    EvalConfig,
    TrainConfig,
    coerce,
)

__all__ = [
    "PROTOCOLS",
    "SECTIONS",
    "SPEED_KEYS",
    "AttackConfig",
    "CheckpointConfig",
    "ConfigError",
    "Eps",
    "EvalConfig",
    "PaperFigures",
    "Protocol",
    "RunConfig",
    "TrainConfig",
    "all_protocols",
    "coerce",
    "computation_dict",
    "config_hash",
    "derive",
    "faithful_protocol",
    "format_eps",
    "get_protocol",
    "identity_of",
    "protocol_changes",
    "protocol_identity",
    "parse_eps",
    "parse_number",
    "protocol_ref",
    "recipe_hash",
    "register_protocol",
    "row_hash",
]
