"""``Protocol``: the frozen, named description of what makes two runs comparable.

A protocol holds the dataset, the threat model and training attack (``attack``), the optimiser,
schedule, epochs, batch and augmentation (``train``), the evaluation (``eval``) and the
checkpoint rule (``checkpoint``). A recipe names one and adds the method, its config, the
teacher and the student (``ardbench.recipes``).

Named protocols are registered (:data:`~ardbench.protocols.registered.PROTOCOLS`, defined in
``named.py``): ``standard-<dataset>``
(one protocol for every method: the fair comparison), the small tracks, and the papers'
faithful protocols, written as the ARD-lineage base plus each paper's departures
(:func:`derive`), so a shared value is stated once.

``per_method``: keys (``attack.random_start``...) that a protocol leaves to each method's own
faithful protocol. The small track fixes the threat model and the budget but lets every method
keep the random start and attack-time BatchNorm mode its official code uses.

Identity: :meth:`Protocol.identity` (:func:`ardbench.protocols.identity.protocol_identity`) is a hash over the values that define the protocol (not the
seed, speed switches, determinism, batch sizes of the evaluation or ``per_method`` keys); the
leaderboard puts runs with the same name and identity in one table. A run whose values differ
from its named protocol (``--set train.epochs=5``) has another identity: it is a modified
protocol, shown as such.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .identity import identity_body, identity_of
from .sections import (
    SECTIONS,
    AttackConfig,
    CheckpointConfig,
    EvalConfig,
    TrainConfig,
    build_section,
    section_dict,
)

__all__ = ["KINDS", "Protocol", "derive", "identity_of", "protocol_changes"]

KINDS = ("standard", "track", "demo", "faithful", "base")


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    dataset: str
    # standard (every method, a fair comparison) | track (a small real-data track) | demo |
    # faithful (a paper's official code) | base (shared by faithful protocols)
    kind: str = "track"
    attack: AttackConfig = field(default_factory=AttackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # the arrays the protocol is defined on (tracks on npz copies): runs are compared by it,
    # whatever path the arrays were loaded from
    data_fingerprint: str | None = None
    # "section.key" values each method takes from its own faithful protocol
    per_method: tuple[str, ...] = ()
    method: str | None = None  # faithful protocols: the method whose official code this is
    default_for_method: bool = True  # the method's protocol when a run names none
    source: str = ""  # where the values come from (official code @ commit, a decision)
    base: str | None = None  # the protocol this one was derived from
    # why the protocol should no longer be used, and what to use instead ("" = current); a
    # retired protocol stays registered so its records keep their tables
    retired: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"protocol {self.name}: kind must be one of {', '.join(KINDS)}")
        for key in self.per_method:
            section, _, sub = key.partition(".")
            if section not in SECTIONS or sub not in {
                f.name for f in dataclasses.fields(SECTIONS[section])
            }:
                raise ConfigError(f"protocol {self.name}: per_method key {key!r} is not a setting")

    def sections(self) -> dict[str, Any]:
        """The protocol's settings as a config layer (JSON values)."""
        return {
            "dataset": self.dataset,
            "attack": section_dict(self.attack),
            "train": section_dict(self.train),
            "eval": section_dict(self.eval),
            "checkpoint": section_dict(self.checkpoint),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "method": self.method,
            "source": self.source,
            "base": self.base,
            "retired": self.retired,
            "per_method": list(self.per_method),
            "data_fingerprint": self.data_fingerprint,
            **self.sections(),
            "identity": self.identity(),
        }

    def identity(self) -> str:
        return identity_of(self.sections(), self.per_method, self.data_fingerprint)


def protocol_changes(
    config: Mapping[str, Any], protocol: Protocol, data_fingerprint: str | None = None
) -> list[tuple[str, Any, Any]]:
    """What a run's resolved config changed in ``protocol``'s identity: ``(key, the run's
    value, the protocol's)`` per differing ``section.key`` (``data`` for the data), sorted by
    key; empty when the run followed the protocol."""
    fingerprint = data_fingerprint if protocol.data_fingerprint else None

    def flat(body: dict[str, Any]) -> dict[str, Any]:
        out = {"data": body["data"]}
        for section in SECTIONS:
            out.update({f"{section}.{k}": v for k, v in body[section].items()})
        return out

    mine = flat(identity_body(config, protocol.per_method, fingerprint))
    theirs = flat(
        identity_body(protocol.sections(), protocol.per_method, protocol.data_fingerprint)
    )
    return [
        (k, mine.get(k), theirs.get(k))
        for k in sorted(set(mine) | set(theirs))
        if mine.get(k) != theirs.get(k)
    ]


def derive(base: Protocol, name: str, description: str, **changes: Any) -> Protocol:
    """A protocol that is ``base`` except for ``changes``: section changes are mappings of the
    keys that differ (``train={"epochs": 300}``), other fields replace."""
    fields: dict[str, Any] = {"name": name, "description": description, "base": base.name}
    for key, value in changes.items():
        if key in SECTIONS and isinstance(value, SECTIONS[key]):
            fields[key] = value
        elif key in SECTIONS:
            merged = {**section_dict(getattr(base, key)), **value}
            fields[key] = build_section(SECTIONS[key], merged, f"protocol {name}: {key}")
        else:
            fields[key] = value
    defaults = {"method": None, "source": "", "default_for_method": True, "retired": ""}
    return dataclasses.replace(base, **{**defaults, **fields})
