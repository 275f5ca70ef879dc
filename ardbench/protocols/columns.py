"""The column registry: every evaluation column, registered in one place.

A column (:class:`~ardbench.protocols.column.Column`: key, title, settings, attack, its
``model_info`` role, how ``ardbench eval`` shows it) is registered once::

    from ardbench.protocols.columns import register_column
    from ardbench.protocols.column import Column

    register_column(Column("pgd5", "PGD-5", pgd5_settings, attack=pgd5_points))

and from then on protocols accept it in ``eval.attacks``, the evaluator runs it, records carry
it in their eval block and the leaderboard renders it. :data:`COLUMNS` and
:data:`COLUMN_TITLES` are live views of the registry (registration order: the built-ins first),
the only names the results layer reads.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

from ..errors import ConfigError
from .builtin_columns import BUILTIN_COLUMNS
from .column import Column

__all__ = [
    "COLUMNS",
    "COLUMN_TITLES",
    "all_columns",
    "get_column",
    "identity_attacks",
    "parse_columns",
    "register_column",
    "unregister_column",
]

_REGISTRY: dict[str, Column] = {}


def register_column(column: Column) -> Column:
    """Add ``column`` after the registered ones; its key and aliases must be new."""
    taken = {a for c in _REGISTRY.values() for a in (c.key, *c.aliases)}
    clash = [a for a in (column.key, *column.aliases) if a in taken]
    if clash:
        raise ConfigError(f"column {column.key}: {clash[0]!r} is already a registered column")
    _REGISTRY[column.key] = column
    return column


def unregister_column(key: str) -> None:
    """Remove a registered column that is not built in (tests, notebooks)."""
    if any(c.key == key for c in BUILTIN_COLUMNS):
        raise ConfigError(f"column {key!r} is built in and cannot be removed")
    _REGISTRY.pop(key, None)


for _builtin in BUILTIN_COLUMNS:
    register_column(_builtin)


def all_columns() -> tuple[Column, ...]:
    return tuple(_REGISTRY.values())


def get_column(key: str) -> Column:
    column = _REGISTRY.get(key)
    if column is None:
        raise _unknown([key])
    return column


def _unknown(names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(names[0], list(_REGISTRY), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"unknown attack column(s) {', '.join(map(repr, names))}",
        hint=f"{hint}known: {', '.join(_REGISTRY)}",
    )


def parse_columns(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """``"clean,pgd20,aa"`` or a sequence -> the columns in registry order, clean always first
    (every attacked column counts a point only when it is also correct clean)."""
    raw = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    aliases = {a: c.key for c in _REGISTRY.values() for a in c.aliases}
    names = [aliases.get(n, n) for n in (str(a).strip().lower() for a in raw) if n]
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise _unknown(unknown)
    return tuple(k for k in _REGISTRY if k in names or k == "clean")


def identity_attacks(attacks: Sequence[Any]) -> list[Any]:
    """``eval.attacks`` as identities hash it: without the columns registered ``later``."""
    later = {c.key for c in _REGISTRY.values() if c.later}
    return [a for a in attacks if a not in later]


class _Keys(Sequence[str]):
    """The registered column keys, in order, read at each use (a tuple's behaviour)."""

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __contains__(self, key: object) -> bool:
        return key in _REGISTRY

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, _Keys)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


class _Titles(Mapping[str, str]):
    """Column key -> title, read from the registry at each use."""

    def __getitem__(self, key: str) -> str:
        return _REGISTRY[key].title

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __repr__(self) -> str:
        return repr(dict(self))


COLUMNS: Sequence[str] = _Keys()
"""The registered column keys in order (built-ins: clean, fgsm, pgd20, cw, aa)."""
COLUMN_TITLES: Mapping[str, str] = _Titles()
"""Column key -> table title (``pgd20`` -> ``PGD-20``)."""
