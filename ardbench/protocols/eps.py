"""Radii and step sizes as exact fractions: one type that parses ``8/255`` and prints one way.

``Eps`` is a :class:`fractions.Fraction` (so ``8/255`` stays exactly 8/255, and two protocols
that say ``8/255`` and ``0.0313725490196...`` are recognised as the same radius) that prints as
the papers write it: ``8/255``, ``0.5/255`` (a half 255th), else the exact decimal (``0.031``,
TRADES' radius). ``float(eps)`` is the correctly rounded float, identical to Python's
``8 / 255``, so computations are unchanged.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from ..errors import ConfigError

__all__ = ["Eps", "format_eps", "parse_eps", "parse_number"]

# a float this close to k/255 or k/510 is taken to mean that fraction (floats written from
# 8/255 by an older ardbench, by YAML or by hand); 1e-12 is far below any meaningful radius
_SNAP_TOL = 1e-12
_MAX_EXPONENT = 400  # beyond any float; far beyond any radius


class Eps(Fraction):
    """An exact radius or step (``Eps("8/255")``, ``Eps(0.031)``, ``Eps(8/255)``)."""

    def __new__(cls, value: Any = 0, denominator: Any = None) -> Eps:
        if denominator is not None:
            return super().__new__(cls, value, denominator)
        return super().__new__(cls, _to_fraction(value))

    def __str__(self) -> str:
        return format_eps(self)

    def __repr__(self) -> str:
        return f"Eps('{format_eps(self)}')"

    def __reduce__(self) -> tuple[type[Eps], tuple[str]]:
        return (Eps, (str(self),))

    # A float compares by value as computations see it: Eps("8/255") == 8 / 255 (a Fraction
    # would compare exactly and say no, since the float is not exactly 8/255)
    def __eq__(self, other: object) -> bool:
        if isinstance(other, float):
            return float(self) == other
        return Fraction.__eq__(self, other)

    def __hash__(self) -> int:  # type: ignore[override]  # Complex says unhashable
        return hash(float(self))

    def to_json(self) -> str:
        return format_eps(self)


def _to_fraction(value: Any) -> Fraction:
    if isinstance(value, bool):
        raise ConfigError(f"expected a number like 8/255 or 0.031, got {value!r}")
    if isinstance(value, Fraction):
        return Fraction(value)
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"expected a finite number, got {value!r}")
        for den in (255, 510):
            k = round(value * den)
            if k and abs(value * den - k) < _SNAP_TOL * den:
                return Fraction(k, den)
        return Fraction(Decimal(repr(value)))  # the decimal the float was written as
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num_text, den_text = text.split("/")
                return _decimal(num_text) / _decimal(den_text)
            return _decimal(text)
        except (ValueError, ZeroDivisionError, InvalidOperation, OverflowError):
            pass
        raise ConfigError(f"expected a number like 8/255 or 0.031, got {value[:40]!r}")
    raise ConfigError(f"expected a number like 8/255 or 0.031, got {value!r}")


def _decimal(text: str) -> Fraction:
    """A decimal string as a fraction; a finite one with an exponent a radius could have (a
    string like ``1e999999999`` would otherwise build a billion-digit integer)."""
    d = Decimal(text.strip())
    if not d.is_finite() or abs(d.adjusted()) > _MAX_EXPONENT:
        raise ValueError(text)
    return Fraction(d)


def parse_eps(value: Any) -> Eps:
    """``8/255``, ``"8/255"``, ``0.031``, ``"0.031"``, a float written from 8/255 -> Eps."""
    return Eps(value)


def parse_number(value: Any) -> float:
    """Any number field of a recipe (``2e-4``, ``8/255``, ``0.5``) as a float."""
    f = _to_fraction(value)
    if f.denominator == 1 or not isinstance(value, float):
        return float(f)
    return float(value)


def _is_decimal(f: Fraction) -> bool:
    den = f.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _decimal_text(f: Fraction) -> str:
    text = format(Decimal(f.numerator) / Decimal(f.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_eps(value: Any) -> str:
    """The one way a radius is printed: ``8/255``, ``0.5/255``, ``1.6/255`` (whole or tenths of
    a 255th, as the papers write them), else the exact decimal (``0.031``), else ``p/q``."""
    f = value if isinstance(value, Fraction) else _to_fraction(value)
    if f.denominator == 1:  # 0, or an integer (a misread 8/255: say it as given)
        return str(f.numerator)
    k = f * 255
    if (10 * k).denominator == 1:
        return f"{_decimal_text(k)}/255"
    if _is_decimal(f):
        return _decimal_text(f)
    return f"{f.numerator}/{f.denominator}"
