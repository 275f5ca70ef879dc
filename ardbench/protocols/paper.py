"""Published figures a recipe sets beside ours: the figure, its table and how far it is trusted.

Figures come from ``../shared/reference/paper-figures.md``; each carries its ``source`` (paper
and table), a ``tag`` saying how it was obtained and the paper's checkpoint ``rule`` (most pick
the best PGD checkpoint on the test set; ardbench reports the last epoch), so a reader of the
leaderboard sees "51.49 (RSLAD T3, checked, best-on-test)" and not a bare number.

:class:`PaperFigures` is the one model of these figures: a recipe's ``paper`` block
(:meth:`PaperFigures.from_dict`, which also requires the source) and a record's ``paper``
block (:class:`ardbench.results.schema.Record` validates it with the same model). A figure
is a percentage keyed by an evaluation column: any column the evaluation knows
(:func:`figure_columns`) is accepted, other keys are errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictStr,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import ConfigError
from . import sections

# checked: a careful third party read the paper's table; relayed: quoted without a check;
# abstract: the paper's own abstract; rerun: an independent re-run; issue: a figure from the
# official repository's issue tracker
TAGS = ("checked", "relayed", "abstract", "rerun", "issue")


def figure_columns() -> tuple[str, ...]:
    """The evaluation columns a figure may be given for: every column the evaluation knows,
    read when a block is checked (so a column registered later is accepted too)."""
    return tuple(sections.EVAL_COLUMNS)


FIGURE_COLUMNS = figure_columns()  # the columns at import time (for listings)
_TEXT_KEYS = ("source", "tag", "rule", "note")

__all__ = ["FIGURE_COLUMNS", "TAGS", "PaperFigures", "figure_columns"]


def _percent(value: Any, handler: Any) -> Any:
    """A figure: a percentage in [0, 100] or null, kept as written (``83`` stays ``83``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100
    if value is not None and not ok:
        raise PydanticCustomError(
            "record",
            "expected a percentage in [0, 100] (or null), got {got}",
            {"got": repr(value)},
        )
    return value


Figure = Annotated[float | None, WrapValidator(_percent)]


class PaperFigures(BaseModel):
    """The published figures of a recipe or a record: text fields plus one percentage (or
    null) per evaluation column, read with :meth:`figure`. Values are kept as written (a
    record's ``83`` stays ``83``); :meth:`to_dict` gives the figures as floats, as a new
    record stores them."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)
    __pydantic_extra__: dict[str, Figure]  # the figures, by evaluation column

    source: StrictStr | None = None  # paper, table and setting
    tag: StrictStr | None = None  # one of TAGS
    rule: StrictStr | None = None  # the paper's checkpoint rule: best-on-test, last, swa ...
    note: StrictStr | None = None  # why the setting differs from ours, where it does

    @model_validator(mode="after")
    def _check(self) -> PaperFigures:
        if self.source is not None and not self.source.strip():
            raise PydanticCustomError("record", "paper.source must name the paper and table")
        if self.tag is not None and self.tag not in TAGS:
            raise PydanticCustomError(
                "record",
                "paper.tag must be one of {tags}; got '{got}'",
                {"tags": ", ".join(TAGS), "got": self.tag},
            )
        for key in self.model_extra or {}:
            if key not in figure_columns():
                raise PydanticCustomError(
                    "record",
                    "unknown key '{key}' in paper (known: {known})",
                    {"key": key, "known": ", ".join([*_TEXT_KEYS, *figure_columns()])},
                )
        return self

    @classmethod
    def from_dict(cls, d: Any) -> PaperFigures:
        """A recipe's ``paper`` block: the model's rules, and a source is required."""
        if not isinstance(d, dict):
            raise ConfigError(f"paper must be a mapping (source, tag, clean, aa...); got {d!r}")
        try:
            out = cls.model_validate(d)
        except ValidationError as exc:
            raise ConfigError(_first_message(exc)) from None
        if out.source is None:
            raise ConfigError("paper.source must name the paper and table")
        return out

    if not TYPE_CHECKING:  # ``figures.aa`` as before the model: None for a column without one

        def __getattr__(self, name: str) -> Any:
            if name in figure_columns():
                return (self.__pydantic_extra__ or {}).get(name)
            return super().__getattr__(name)

    def figure(self, column: str) -> float | None:
        """The published figure (percent) for an evaluation column, or None."""
        value = (self.model_extra or {}).get(column)
        return None if value is None else float(value)

    @property
    def figures(self) -> dict[str, float]:
        """{column: percent} for the columns that have a figure, in column order."""
        out = {c: self.figure(c) for c in figure_columns()}
        return {c: v for c, v in out.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """The block as a new record stores it: set text fields, figures as floats."""
        text = {k: getattr(self, k) for k in _TEXT_KEYS if getattr(self, k) is not None}
        return {**text, **self.figures}

    def label(self, column: str) -> str | None:
        """``51.49 (RSLAD T3, checked, best-on-test)`` for a table cell, or None."""
        v = self.figure(column)
        if v is None:
            return None
        bits = [b for b in (self.source, self.tag, self.rule) if b]
        return f"{v:.2f} ({', '.join(bits)})"


def _first_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = "".join(f".{p}" for p in err["loc"])
    if err["type"] == "record":
        return f"paper{where}: {err['msg']}" if where else str(err["msg"])
    return f"paper{where}: {err['msg']} (got {err.get('input')!r})"
