"""The leaf types of the record schema (:mod:`ardbench.results.schema`): strict pydantic
types whose errors speak the record's words ("expected a sha256 (64 lowercase hex digits), got
a string ('xyz')"), numbers that are checked as floats but kept as written, and fields that
may be absent but never null."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from numbers import Real
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

NORMS = ("Linf", "L2")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
"""Ids (run ids, architecture names) become file and directory names: no separators, no
leading dot or dash, no characters a shell or a markdown table would read."""


def describe(value: Any) -> str:
    """What a JSON value is, for error messages ("a string ('L3')", "a list")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, Real):
        return f"a number ({value!r})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


# ------------------------------------------------------------------------------ leaf types


def expect(what: str) -> WrapValidator:
    """pydantic checks the value; this only says what was expected, in the record's words."""

    def wrap(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "record":  # already in our words (a timestamp's own message)
                raise PydanticCustomError("record", first["msg"]) from None
            raise PydanticCustomError(
                "record", "expected {what}, got {got}", {"what": what, "got": describe(value)}
            ) from None

    return WrapValidator(wrap)


def _timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError(
            "record", "expected an ISO-8601 timestamp, got {got}", {"got": repr(value)}
        ) from None
    if parsed.tzinfo is None:
        raise PydanticCustomError(
            "record",
            "timestamp {got} has no timezone (write UTC: +00:00)",
            {"got": repr(value)},
        )
    return value


def pattern(regex: str) -> Any:
    # anchored: pydantic's pattern searches; the rust engine's $ is the very end of the text
    return Field(pattern=f"^(?:{regex})$")


Text = Annotated[StrictStr, Field(min_length=1), expect("a non-empty string")]
Id = Annotated[
    StrictStr,
    pattern(ID_PATTERN),
    expect("an id (letters, digits, '.', '_', '-'; starting with a letter or digit)"),
]
RunId = Annotated[
    StrictStr,
    pattern(ID_PATTERN),
    expect("a run id (letters, digits, '.', '_', '-'; starting with a letter or digit)"),
]
Snake = Annotated[StrictStr, pattern(r"[a-z][a-z0-9_]*"), expect("a lowercase snake_case name")]
Hex64 = Annotated[StrictStr, pattern(r"[0-9a-f]{64}"), expect("a sha256 (64 lowercase hex digits)")]
Hex40 = Annotated[
    StrictStr, pattern(r"[0-9a-f]{40}"), expect("a git sha (40 lowercase hex digits)")
]
ConfigHash = Annotated[StrictStr, pattern(r"[0-9a-f]{8,64}"), expect("a hex config hash")]
Norm = Annotated[Literal["Linf", "L2"], expect("one of " + ", ".join(NORMS))]
Bool = Annotated[StrictBool, expect("true or false")]
Timestamp = Annotated[
    StrictStr, WrapValidator(lambda v, h: _timestamp(h(v))), expect("an ISO-8601 timestamp")
]
AnyInt = Annotated[int, expect("an integer")]
Count1 = Annotated[int, Field(ge=1), expect("an integer >= 1")]
Count0 = Annotated[int, Field(ge=0), expect("an integer >= 0")]
Classes = Annotated[int, Field(ge=2), expect("an integer >= 2")]


def _as_written(value: Any, handler: Any) -> Any:
    """A number checked as a float but kept as written: a record's ``1`` loads as ``1`` and
    dumps as ``1`` (not ``1.0``), so load -> dump gives the file's bytes back."""
    checked = handler(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else checked


Number = WrapValidator(_as_written)
Eps = Annotated[float, Field(gt=0), Number, expect("eps > 0")]
Seconds = Annotated[float, Field(ge=0), Number, expect("a number >= 0")]
Fraction = Annotated[
    float, Field(ge=0, le=1), Number, expect("an accuracy as a fraction in [0, 1] (or null)")
]
Percent = Annotated[float, Field(ge=0, le=100), Number, expect("a percentage in [0, 100]")]


def _fractions_branch(value: Any) -> str:
    return "<object>" if isinstance(value, Mapping) else "<fraction>"


def _present(value: Any, handler: Any) -> Any:
    if value is None:
        raise PydanticCustomError("record", "may be absent, but not null")
    return handler(value)


NotNull = WrapValidator(_present)
"""For a field that may be absent (typed ``X | None = None``) but never written as null."""

# A fraction in [0, 1], null (not run), or an object of those (e.g. a breakdown). The tags
# name the branch in pydantic's error locations; validation drops them from paths.
if TYPE_CHECKING:  # the same type, in words mypy reads
    Fractions: TypeAlias = "dict[str, Fractions] | float | None"
else:
    Fractions = TypeAliasType(
        "Fractions",
        Annotated[
            Annotated[dict[str, "Fractions"], Tag("<object>")]
            | Annotated[Fraction | None, Tag("<fraction>")],
            Discriminator(_fractions_branch),
        ],
    )
