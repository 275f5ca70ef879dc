"""Every identity a run has, in one place: which runs are "the same" for which purpose.

=======================  =========================  ===============================================
identity                 function                   what it answers
=======================  =========================  ===============================================
protocol identity        :func:`protocol_identity`  did the run follow a named protocol's values?
                                                    (12 hex; a record's ``protocol.identity``)
config hash              :func:`config_hash`        is this the same computation, seed included?
                                                    (16 hex; ``method.config_hash``, sweep points)
row hash                 :func:`row_hash`           which runs differ only by seed? (12 hex; the
                                                    config part of a leaderboard row)
table key                :func:`ardbench.results.   which leaderboard table holds the run?
                         grouping.table_key`        (protocol identity + track + teacher weights
                                                    + student architecture)
row identity             :func:`ardbench.results.   which runs are averaged into one table row?
                         grouping.row_identity`     (table key + method + recipe + row hash +
                                                    checkpoint; the ``row_identity`` column of
                                                    ``ardbench.results()``)
=======================  =========================  ===============================================

The first three hash a resolved run config (``RunConfig.to_dict()``, a record's ``config``)
and live here; the last two also read the record (its track, teacher, student) and are built
in :mod:`ardbench.results.grouping` from these. ``RunConfig.recipe_hash`` is the older name
of the Python API for :func:`row_hash` (the API grouped by it while the tables split a seed
run with ``train.deterministic=true`` from one without; both now use :func:`row_hash`, which
leaves determinism out as the protocol identity does: it changes no number a table shows).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .sections import (
    RUN_OPTION_KEYS,
    SECTIONS,
    build_section,
    drop_later_defaults,
    section_dict,
)

__all__ = [
    "computation_dict",
    "config_hash",
    "identity_of",
    "protocol_identity",
    "recipe_hash",
    "row_hash",
]

# values that never define a protocol: the seed varies within a row by design; the speed
# switches keep the computation; determinism and the evaluation batch (its random starts are
# per point) change no number a table shows
_NOT_IDENTITY = {
    "train": ("seed", "deterministic", *RUN_OPTION_KEYS),
    "eval": ("batch_size",),
}

# provenance and where files live: never part of a computation's hash
_PROVENANCE = ("recipe", "paper", "data_dir", "download", "device")
# what a table's key already fixes (the data by fingerprint, the teacher by its weights)
_TABLE_PARTS = ("dataset", "teacher", "student")


def _digest(d: Mapping[str, Any], n: int) -> str:
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def computation_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config without what cannot change the numbers, for hashing: the speed
    features that keep the computation (SPEED_KEYS; ``amp: none``; ``eval.batch_size``, whose
    columns draw their random starts per point), the default checkpoint rule and section keys
    left at None (so an optional key added in a later version hashes like its absence)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for section in SECTIONS:
        sub = out.get(section)
        if isinstance(sub, dict):
            for key in RUN_OPTION_KEYS:
                sub.pop(key, None)
            if section == "eval":
                sub.pop("batch_size", None)
            drop_later_defaults(section, sub)
            for key in [k for k, v in sub.items() if v is None]:
                sub.pop(key)
    if out.get("checkpoint") in ({"rule": "last"}, {}):
        out.pop("checkpoint")
    return out


def identity_body(
    config: Mapping[str, Any],
    per_method: Iterable[str] = (),
    data_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The values a protocol identity hashes: the data and every section parsed through its
    type, without the keys that are not part of an identity and the per-method ones."""
    skip: dict[str, set[str]] = {s: set(keys) for s, keys in _NOT_IDENTITY.items()}
    for key in per_method:
        section, _, sub = key.partition(".")
        skip.setdefault(section, set()).add(sub)
    body: dict[str, Any] = {
        "data": data_fingerprint or str(config.get("dataset")),
    }
    for section, cls in SECTIONS.items():
        values = config.get(section) or {}
        parsed = section_dict(build_section(cls, dict(values), section))
        body[section] = {k: v for k, v in parsed.items() if k not in skip.get(section, ())}
    for section in SECTIONS:
        drop_later_defaults(section, body[section])
    return body


def protocol_identity(
    config: Mapping[str, Any],
    per_method: Iterable[str] = (),
    data_fingerprint: str | None = None,
) -> str:
    """The identity (12 hex digits) of a protocol, or of a run's resolved config (a dict with
    ``dataset``, ``attack``, ``train``, ``eval`` and optionally ``checkpoint``). Values are
    parsed through the typed sections first, so ``8/255`` and ``0.0313725...`` hash alike.

    ==================================  ==================================================
    includes                            excludes
    ==================================  ==================================================
    the data (``data_fingerprint``      the method and its config, teacher, student
    when given, else the dataset spec)  ``train.seed``, ``train.deterministic``
    every ``attack``, ``train``,        the speed switches (``RUN_OPTION_KEYS``)
    ``eval``, ``checkpoint`` value      ``eval.batch_size``; ``per_method`` keys
                                        keys at their "later default" (LATER_DEFAULTS)
                                        recipe, paper, paths, device
    ==================================  ==================================================
    """
    return _digest(identity_body(config, per_method, data_fingerprint), 12)


identity_of = protocol_identity  # the name used before this module existed


def config_hash(config: Mapping[str, Any]) -> str:
    """The hash (16 hex digits) of everything that defines a run's computation: two runs
    with the same hash compute the same thing (a sweep point, ``method.config_hash``).

    ==================================  ==================================================
    includes                            excludes
    ==================================  ==================================================
    method and method config            recipe, paper (provenance)
    dataset, teacher, student specs     data_dir, download, device (where, not what)
    every section value, the seed and   the protocol's name (its values are included)
    ``train.deterministic``             the speed switches, ``eval.batch_size``, keys
    a non-default checkpoint rule       left at None or at their "later default"
    ==================================  ==================================================
    """
    d = computation_dict(config)
    for key in (*_PROVENANCE, "protocol"):
        d.pop(key, None)
    return _digest(d, 16)


def row_hash(config: Mapping[str, Any]) -> str:
    """The config part of a leaderboard row (12 hex digits): runs with the same row hash (in
    one table, of one method, recipe and checkpoint) differ only by seed and are averaged.

    ==================================  ==================================================
    includes                            excludes
    ==================================  ==================================================
    method and method config            ``train.seed`` (varies within a row by design)
    every section value that can        ``train.deterministic`` (as the protocol identity:
    change a number (``train.amp``      cuDNN's deterministic mode changes no number a
    included)                           table shows beyond run-to-run noise)
    a non-default checkpoint rule       the protocol's name (its values are hashed), recipe,
                                        paper, data_dir, download, device
                                        dataset, teacher, student (the table key's)
                                        the speed switches, ``eval.batch_size``,
                                        ``eval.aa_batch_size`` (moves AA only via its
                                        random inits); keys at their "later default"
    ==================================  ==================================================

    This is what the leaderboard called ``protocol_hash`` and the API ``recipe_hash``.
    """
    d = computation_dict(copy.deepcopy(dict(config)))
    for key in (*_PROVENANCE, "protocol", *_TABLE_PARTS):
        d.pop(key, None)
    if isinstance(d.get("train"), dict):
        d["train"].pop("seed", None)
        d["train"].pop("deterministic", None)
    if isinstance(d.get("eval"), dict):
        d["eval"].pop("batch_size", None)
        d["eval"].pop("aa_batch_size", None)
    return _digest(d, 12)


def recipe_hash(config: Mapping[str, Any]) -> str:
    """The Python API's older name for :func:`row_hash` (kept for compatibility)."""
    return row_hash(config)
