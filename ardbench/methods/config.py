"""A method's ``Config``: a frozen dataclass whose types say what each key accepts.

The base checks every key once, when a Config is built (from a recipe, the command line or
Python), before any work: a ``Literal`` lists the choices, ``Annotated[float, Range(...)]``
bounds a number (``Positive``, ``NonNegative``, ``Fraction`` are the common ones), and every
float must be finite. A subclass's own ``__post_init__`` (checks across keys) runs after these,
whether or not it calls ``super().__post_init__()``::

    @dataclass(frozen=True)
    class MyConfig(MethodConfig):
        tau: Positive = 1.0                      # > 0
        weight: NonNegative = 1.0                # >= 0
        kl_reduction: KLReduction = "batchmean"  # one of batchmean, mean_all, rslad
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import ConfigError
from ..protocols import coerce

__all__ = [
    "Fraction",
    "MethodConfig",
    "NonNegative",
    "NonNegativeInt",
    "Positive",
    "PositiveInt",
    "Range",
    "check_config_value",
]


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``lo``/``hi`` (None: unbounded), open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self) -> str:
        if self.hi is None and self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None and self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"in {left}{lo}, {hi}{right}"


Positive = Annotated[float, Range(lo=0.0, lo_open=True)]
"""A float > 0 (temperatures, learning-rate scales)."""
NonNegative = Annotated[float, Range(lo=0.0)]
"""A float >= 0 (loss weights, radii)."""
Fraction = Annotated[float, Range(lo=0.0, hi=1.0)]
"""A float in [0, 1] (mixing weights)."""
PositiveInt = Annotated[int, Range(lo=1.0)]
NonNegativeInt = Annotated[int, Range(lo=0.0)]


def _describe_choices(choices: tuple[Any, ...]) -> str:
    return ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)


def _check(tp: Any, value: Any, key: str) -> None:
    """Raise a one-line ConfigError if ``value`` is not what the annotation ``tp`` allows."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        _check(args[0], value, key)
        bounds = [b for b in args[1:] if isinstance(b, Range)]
        if bounds and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{key} must be a number; got {value!r}")
        for bound in bounds:
            if not bound.holds(value):
                raise ConfigError(f"{key} must be {bound.describe()}; got {value!r}")
    elif origin in (typing.Union, types.UnionType):
        if value is not None:
            inner = [a for a in args if a is not type(None)]
            errors = []
            for a in inner:
                try:
                    _check(a, value, key)
                    return
                except ConfigError as exc:
                    errors.append(exc)
            raise errors[-1]
    elif origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {_describe_choices(args)}; got {value!r}")
    elif origin is tuple and isinstance(value, tuple):
        item = args[0] if args else Any
        for i, v in enumerate(value):
            _check(item, v, f"{key}[{i}]")
    elif tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number; got {value!r}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The annotated type of each field of the dataclass ``cls`` (Annotated kept)."""
    if cls not in _HINTS:
        names = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls, include_extras=True)
        _HINTS[cls] = {k: v for k, v in hints.items() if k in names}
    return _HINTS[cls]


def check_config_value(cls: type, name: str, value: Any, key: str) -> None:
    """Check one (already coerced) value of ``cls.name`` against its type; ``key`` names it."""
    _check(_hints(cls)[name], value, key)


def _checked(post_init: Callable[[Any], None]) -> Callable[[Any], None]:
    """``post_init`` with the base's key checks run first (a subclass need not call super)."""

    @functools.wraps(post_init)
    def run(self: MethodConfig) -> None:
        self._check_keys()
        try:
            post_init(self)
        except ConfigError as exc:  # a check across keys: say whose
            where = type(self).where or type(self).__qualname__
            if exc.message.startswith(where):
                raise
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None

    run.__ardbench_checked__ = True  # type: ignore[attr-defined]
    return run


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's Config. Defaults reproduce the official code, quirks included."""

    # how errors name this config ("method_config of 'rslad'", set by register_method); not
    # annotated, so not a field
    where = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "__ardbench_checked__", False):
            setattr(cls, "__post_init__", _checked(own))  # noqa: B010 (a method, replaced)

    def __post_init__(self) -> None:
        self._check_keys()

    def _check_keys(self) -> None:
        where = type(self).where or type(self).__qualname__
        for name in _hints(type(self)):
            check_config_value(type(self), name, getattr(self, name), f"{where}.{name}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "method_config") -> MethodConfig:
        kwargs = {k: coerce(cls, k, v, where) for k, v in values.items()}
        for k, v in kwargs.items():
            check_config_value(cls, k, v, f"{where}.{k}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # a check across keys: named by ``where``
            msg = exc.message
            own = f"{cls.where or cls.__qualname__}: "
            msg = msg[len(own) :] if msg.startswith(own) else msg
            raise ConfigError(
                msg if msg.startswith(where) else f"{where}: {msg}", hint=exc.hint
            ) from None
        except (TypeError, ValueError) as exc:  # a Config's own checks (__post_init__)
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        }
