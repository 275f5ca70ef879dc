"""Records that cannot be true: refused before they reach a table.

A record is a claim; what it says about itself can be checked where it can be recomputed:

- every attacked accuracy is at most the clean one (the evaluation is point-wise worst case:
  an attacked point counts only when it is also correct clean, see :mod:`ardbench.eval.core`);
- every accuracy is a whole number of correct points out of ``eval.n_examples``;
- the ``protocol`` block's identity is the one its own ``config`` gives (else the run would
  be filed under another protocol's table);
- no string is longer than a record needs (a 40 MB field would become 40 MB of markdown).

The identity function comes from one place (:data:`_protocol_ref`), easy to retarget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ArdbenchError
from ..protocols import protocol_ref as _protocol_ref
from .validate import RecordError

__all__ = ["MAX_RECORD_STRING", "check_plausible"]

MAX_RECORD_STRING = 64 << 10  # the longest string field: a description, a spec, a path
_ACC_TOL = 1e-6  # relative: accuracies written as k / n in float64 are far closer


def _check_strings(value: Any, path: str) -> None:
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        cur, where = stack.pop()
        if isinstance(cur, str) and len(cur) > MAX_RECORD_STRING:
            raise RecordError(where, f"is {len(cur)} characters, over {MAX_RECORD_STRING}")
        if isinstance(cur, Mapping):
            for k, v in cur.items():
                key = str(k)
                if len(key) > 1000:
                    raise RecordError(where, f"has a key of {len(key)} characters")
                stack.append((v, f"{where}.{key}" if where else key))
        elif isinstance(cur, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(cur))


def _check_accuracy(ev: Mapping[str, Any]) -> None:
    acc, n = ev.get("accuracy") or {}, ev.get("n_examples")
    clean = acc.get("clean")
    for name, value in acc.items():
        if not isinstance(value, int | float):
            continue
        if isinstance(clean, int | float) and name != "clean" and value > clean + 1e-12:
            raise RecordError(
                f"eval.accuracy.{name}",
                f"{value!r} is above the clean accuracy {clean!r}; an attacked accuracy "
                "counts only points also correct clean, so it cannot be higher",
            )
        if isinstance(n, int) and n > 0:
            count = value * n
            if abs(count - round(count)) > _ACC_TOL * n + 1e-9:
                raise RecordError(
                    f"eval.accuracy.{name}",
                    f"{value!r} is not a whole number of points out of eval.n_examples={n}",
                )


def _check_identity(record: Mapping[str, Any]) -> None:
    block = record.get("protocol")
    config = record.get("config")
    if not isinstance(block, Mapping) or not isinstance(config, Mapping):
        return
    track = record.get("track")
    fingerprint = track.get("data_fingerprint") if isinstance(track, Mapping) else None
    try:
        ref = _protocol_ref(config, fingerprint)
    except ArdbenchError as exc:
        raise RecordError(
            "config", f"cannot be read to recompute the protocol identity ({exc})"
        ) from None
    if block.get("identity") != ref["identity"]:
        raise RecordError(
            "protocol.identity",
            f"{block.get('identity')!r} is not the identity of the record's own config "
            f"({ref['identity']!r}); the record would be filed under another protocol",
        )


def check_plausible(record: Mapping[str, Any]) -> None:
    """Raise :class:`RecordError` naming the field of ``record`` that cannot be true."""
    _check_strings(record, "")
    ev = record.get("eval")
    if isinstance(ev, Mapping):
        _check_accuracy(ev)
    _check_identity(record)
