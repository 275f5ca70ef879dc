"""A plausible L∞ radius: refuse one that is almost certainly a typo, unless forced (issue 27).

``attack.eps=0.5`` is a valid number, and a run with it trains for minutes and then reports
0 % robust accuracy "at eps 127.5/255": the user meant ``0.5/255`` (or 8/255). Radii above
:data:`MAX_LINF` (32/255, four times the standard CIFAR radius and beyond any benchmark's
L∞ threat model) are refused before any work, with the reading that was probably meant and
the flag to proceed anyway. L2 radii (0.5 is the standard CIFAR one) are not checked here;
radii above 1 are refused for every norm by ``sections.check_radius``.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .eps import Eps, format_eps

__all__ = ["MAX_LINF", "check_eps_plausible", "implausible_eps"]

MAX_LINF = Eps(32, 255)


def implausible_eps(norm: str, eps: Any) -> str | None:
    """Why ``eps`` is not a plausible ``norm`` radius (with the likely intent), else None."""
    if norm != "Linf":
        return None
    e = Eps(eps)
    if e <= MAX_LINF:
        return None
    per_255 = format_eps(e)  # 0.5 prints as 127.5/255
    short = _short_decimal(e)  # 0.5, 1: how such a radius is typed
    shown = f"{short} (= {per_255})" if short and short != per_255 else per_255
    if e.denominator == 1:  # 1: a pixel count
        intent = f"it looks like a pixel count: did you mean {short}/255?"
    elif short:  # 0.5, 0.25: a fraction of a 255th
        intent = f"did you mean {short}/255 (radii are in [0, 1] pixel units)?"
    else:
        intent = "the standard CIFAR radius is 8/255"
    return f"an L∞ radius of {shown} is above {format_eps(MAX_LINF)}; {intent}"


def _short_decimal(e: Eps) -> str | None:
    """``e`` as a decimal of at most three places (``0.5``, ``1``), else None."""
    scaled = e * 1000
    if scaled.denominator != 1:
        return None
    text = f"{scaled.numerator / 1000:.3f}".rstrip("0").rstrip(".")
    return text


def check_eps_plausible(
    norm: str, eps: Any, *, force: bool = False, key: str = "attack.eps", flag: str = "--force"
) -> None:
    """Raise a one-line :class:`ConfigError` for an implausible radius unless ``force``."""
    problem = None if force else implausible_eps(norm, eps)
    if problem is not None:
        raise ConfigError(f"{key}: {problem}", hint=f"{flag} runs it as given")
