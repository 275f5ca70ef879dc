"""What an evaluation column is: :class:`Column`, the one description the evaluator, the record,
RobustBench's ``model_info`` and the leaderboard read.

Kept free of torch: protocols validate column names and the results layer renders titles
without loading the attack code. A column's code is either a callable or a reference
``"module:function"`` that the evaluator imports when the column runs (the built-ins name
``ardbench.eval`` functions this way, so this package never imports the evaluator).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["Column", "ModelInfoRole", "PointContext", "SettingsContext"]

ModelInfoRole = Literal["clean", "autoattack", "external", "none"]
"""How RobustBench's ``model_info`` uses a column: ``clean_acc``, ``autoattack_acc``, a candidate
for ``external`` (another attack's lower accuracy), or not at all."""

_KEY = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class SettingsContext:
    """What a column's recorded settings may depend on (the evaluation's own settings)."""

    eps: float
    norm: str = "Linf"
    seed: int = 0
    aa_batch_size: int = 256
    chunk_size: int | None = None
    aa_version: str = "standard"


@dataclass(frozen=True)
class PointContext:
    """What a per-batch attack gets beside the model and the points: the threat model, the
    seed, the index of the batch's first point (per-point random starts) and the column's
    recorded settings (steps, step, loss...). ``column`` (the key) seeds per-point starts."""

    column: str
    eps: float
    norm: str
    seed: int
    start: int
    settings: Mapping[str, Any]


# (model, x, y, ctx) -> x_adv, detached, inside the eps-ball and [0, 1]
PointAttack = Callable[[Any, Any, Any, PointContext], Any]


@dataclass(frozen=True)
class Column:
    """One evaluation column, registered with :func:`ardbench.protocols.columns.register_column`.

    Attributes:
        key: the record's key (lowercase snake_case: ``pgd20``).
        title: the table heading (``PGD-20``).
        settings: what the record stores about the attack, from the evaluation's settings.
        attack: per-batch adversarial points (``(model, x, y, PointContext) -> x_adv``, or a
            ``"module:function"`` reference); the evaluator counts a point robust when it is
            correct clean and at ``x_adv``. None with ``runner`` (a whole-column attack) or for
            a column that attacks nothing (clean).
        runner: a whole-column runner (``"module:function"`` or a callable taking the
            evaluator's ``ColumnRun``) for attacks that batch and resume themselves (AutoAttack).
        aliases: other spellings ``--attacks`` accepts.
        model_info: its role in RobustBench's ``model_info`` (:data:`ModelInfoRole`).
        steps_label: what ``ardbench eval``'s "steps" cell shows (default: ``settings["steps"]``).
        later: added after records existed. A later column in a protocol's ``eval.attacks`` is
            left out of every identity and config hash (the rule of ``LATER_DEFAULTS``), so
            adding it to a protocol's evaluation keeps that protocol's identity. Built-ins: False.
        description: one line for ``ardbench eval --help`` and the docs.
    """

    key: str
    title: str
    settings: Callable[[SettingsContext], dict[str, Any]]
    attack: PointAttack | str | None = None
    runner: Callable[[Any], Any] | str | None = None
    aliases: tuple[str, ...] = ()
    model_info: ModelInfoRole = "external"
    steps_label: str | None = None
    later: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ConfigError(f"column key {self.key!r} must be lowercase snake_case")
        if not self.title.strip() or "|" in self.title or "\n" in self.title:
            raise ConfigError(f"column {self.key}: title {self.title!r} must be one line, no '|'")
        if self.attack is not None and self.runner is not None:
            raise ConfigError(f"column {self.key}: give attack or runner, not both")
        if self.model_info not in ("clean", "autoattack", "external", "none"):
            raise ConfigError(
                f"column {self.key}: model_info must be clean, autoattack, external or none"
            )
