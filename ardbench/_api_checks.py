"""Argument checks at the Python API's boundary (:mod:`ardbench.api`).

A wrong type caught here is one :class:`APIArgumentError` (an :class:`ArdbenchError` and a
``TypeError``) naming the argument, instead of an error from deep inside pathlib, torch or
the evaluator (``train(sets="train.lr=0.1")`` would otherwise split the string into
characters). Each public function checks its own arguments with one call::

    check_arguments(EVALUATE_ARGS, locals())
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ArdbenchError

__all__ = [
    "APIArgumentError",
    "CONFIG_ARGS",
    "EVALUATE_ARGS",
    "RESULTS_ARGS",
    "TRAIN_ARGS",
    "check_arguments",
]


class APIArgumentError(ArdbenchError, TypeError):
    """An argument of the Python API of the wrong type or out of range; names it."""


Check = Callable[[Any], str | None]  # None when fine, else what the value should be


def _type_name(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.60}"


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def _opt(check: Check) -> Check:
    def inner(v: Any) -> str | None:
        problem = check(v)
        return None if v is None or problem is None else f"{problem} or None"

    return inner


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def _whole(v: Any) -> str | None:
    return None if _int(v) else "a whole number"


def _count(v: Any) -> str | None:
    return None if _int(v) and v >= 1 else "a whole number >= 1"


def _seed(v: Any) -> str | None:
    return None if _int(v) and 0 <= v <= 2**63 - 1 else "a whole number in [0, 2**63 - 1]"


def _path(v: Any) -> str | None:
    return None if isinstance(v, str | os.PathLike) else "a path (str or pathlib.Path)"


def _strings(v: Any) -> str | None:
    if isinstance(v, str | bytes):
        return f"a list of strings, not one string (write [{v!r:.40}])"
    try:
        items = list(v)
    except TypeError:
        return "a list of strings"
    return None if all(isinstance(x, str) for x in items) else "a list of strings"


def _str_or_strings(v: Any) -> str | None:
    return None if isinstance(v, str) else _strings(v)


def _eps(v: Any) -> str | None:
    ok = isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool))
    return None if ok else "a number or a string such as '8/255'"


def _batch(v: Any) -> str | None:
    return None if v == "auto" or (_int(v) and v >= 1) else "'auto' or a whole number >= 1"


def _model(v: Any) -> str | None:
    from torch import nn

    from .rundir import Run

    ok = isinstance(v, nn.Module | Run | str)
    return None if ok else "an nn.Module, a Run or a model spec string"


def _path_or_run(v: Any) -> str | None:
    from .rundir import Run

    return (
        None if isinstance(v, str | os.PathLike | Run) else "a path (str or pathlib.Path) or a Run"
    )


_OPT_STR = _opt(_str)
CONFIG_ARGS: dict[str, Check] = {
    **dict.fromkeys(
        ("method", "protocol", "recipe", "preset", "teacher", "student", "dataset"), _OPT_STR
    ),
    **dict.fromkeys(("data_dir", "device"), _OPT_STR),
    "seed": _opt(_whole),  # ranges: the config's own checks, with their messages
    "epochs": _opt(_whole),
    "download": _bool,
    "sets": _strings,
}
TRAIN_ARGS: dict[str, Check] = {
    "runs": _path,
    "progress": _bool,
    "threads": _opt(_count),
    "tensorboard": _bool,
}
EVALUATE_ARGS: dict[str, Check] = {
    "model": _model,
    "dataset": _str,
    "eps": _eps,
    "attacks": _str_or_strings,
    "n_examples": _opt(_count),
    "norm": _str,
    "seed": _seed,
    "device": _str,
    "batch_size": _batch,
    "aa_batch_size": _count,
    "data_dir": _OPT_STR,
    "download": _bool,
    "runs": _path,
    "progress": _bool,
    "threads": _opt(_count),
}
RESULTS_ARGS: dict[str, Check] = {"*paths": _path_or_run}  # "*": each of the values


def check_arguments(checks: Mapping[str, Check], arguments: Mapping[str, Any]) -> None:
    """Raise :class:`APIArgumentError` for the first argument its check refuses."""
    for key, check in checks.items():
        name = key.lstrip("*")
        if name not in arguments:
            continue
        values = (
            dict(enumerate(arguments[name])) if key.startswith("*") else {None: arguments[name]}
        )
        for i, value in values.items():
            problem = check(value)
            if problem is not None:
                where = name if i is None else f"{name}[{i}]"
                raise APIArgumentError(f"{where} must be {problem}, got {_type_name(value)}")
