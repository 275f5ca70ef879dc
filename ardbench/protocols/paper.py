"""Published figures a recipe sets beside ours: the figure, its table and how far it is trusted.

Figures come from ``../shared/reference/paper-figures.md``; each carries its ``source`` (paper
and table), a ``tag`` saying how it was obtained and the paper's checkpoint ``rule`` (most pick
the best PGD checkpoint on the test set; ardbench reports the last epoch), so a reader of the
leaderboard sees "51.49 (RSLAD T3, checked, best-on-test)" and not a bare number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

# checked: a careful third party read the paper's table; relayed: quoted without a check;
# abstract: the paper's own abstract; rerun: an independent re-run; issue: a figure from the
# official repository's issue tracker
TAGS = ("checked", "relayed", "abstract", "rerun", "issue")
FIGURE_COLUMNS = ("clean", "fgsm", "pgd20", "cw", "aa")


@dataclass(frozen=True)
class PaperFigures:
    source: str  # paper, table and setting, e.g. "RSLAD ICCV'21, Table 3"
    tag: str | None = None
    rule: str | None = None  # the paper's checkpoint rule: best-on-test, last, swa ...
    note: str | None = None  # why the setting differs from ours, where it does
    clean: float | None = None  # percent
    fgsm: float | None = None
    pgd20: float | None = None
    cw: float | None = None
    aa: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("paper.source must name the paper and table")
        if self.tag is not None and self.tag not in TAGS:
            raise ConfigError(f"paper.tag must be one of {', '.join(TAGS)}; got {self.tag!r}")
        for key in ("rule", "note"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise ConfigError(f"paper.{key} must be text")
        for col in FIGURE_COLUMNS:
            v = getattr(self, col)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
                raise ConfigError(
                    f"paper.{col} must be a percentage in [0, 100] or null; got {v!r}"
                )
            object.__setattr__(self, col, float(v))

    @classmethod
    def from_dict(cls, d: Any) -> PaperFigures:
        if not isinstance(d, dict):
            raise ConfigError(f"paper must be a mapping (source, tag, clean, aa...); got {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown key {extra[0]!r} in paper", hint=f"known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def label(self, column: str) -> str | None:
        """``51.49 (RSLAD T3, checked, best-on-test)`` for a table cell, or None."""
        v = getattr(self, column, None)
        if v is None:
            return None
        bits = [self.source] + [b for b in (self.tag, self.rule) if b]
        return f"{v:.2f} ({', '.join(bits)})"
