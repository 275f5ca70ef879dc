"""Name -> object registries with "did you mean" errors and entry-point discovery.

Methods, architectures and datasets are looked up by lowercase name everywhere (CLI, recipes,
records). External packages add methods through the entry-point group ``ardbench.methods``;
the entry point's object is imported, which runs its ``@register_method`` decorator.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import ArdbenchError

T = TypeVar("T")


class UnknownNameError(ArdbenchError, KeyError):
    """Raised for a name no registry entry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return ArdbenchError.__str__(self)


class PluginError(ArdbenchError, ImportError):
    """An installed plug-in (entry point) that fails to import; names it and the error."""


class Registry(Generic[T]):
    """A named collection of objects (classes or factories) of one kind."""

    def __init__(
        self, kind: str, entry_point_group: str | None = None, *, hyphens: bool = False
    ) -> None:
        self.kind = kind
        self.hyphens = hyphens  # names like "standard-cifar10" (protocols) besides snake_case
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = False
        self._loaders: list[Callable[[], None]] = []

    def register(self, name: str) -> Callable[[T], T]:
        allowed = name.replace("_", "").replace("-", "") if self.hyphens else name.replace("_", "")
        if name != name.lower() or not allowed.isalnum() or not name[:1].isalnum():
            style = "lowercase letters, digits, - and _" if self.hyphens else "lowercase snake_case"
            raise ValueError(f"{self.kind} name {name!r} must be {style}")

        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if (
                existing is not None
                and existing is not obj
                and _qualname(existing) != _qualname(obj)
            ):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {_qualname(existing)}; "
                    f"pick another name for {_qualname(obj)}"
                )
            self._entries[name] = obj
            if isinstance(obj, type):
                obj.registry_name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    def add_loader(self, loader: Callable[[], None]) -> None:
        """A function run once before the first lookup (e.g. importing built-in modules)."""
        self._loaders.append(loader)

    def _ensure_loaded(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()
        if self.entry_point_group and not self._entry_points_loaded:
            self._entry_points_loaded = True
            for ep in metadata.entry_points(group=self.entry_point_group):
                try:
                    ep.load()
                except Exception as exc:  # a broken plug-in must not hide the built-ins
                    raise PluginError(
                        f"entry point {ep.name!r} in group {self.entry_point_group!r} "
                        f"({ep.value}) failed to import: {exc}"
                    ) from exc

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except KeyError:
            pass
        known = sorted(self._entries)
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}",
            hint=f"{hint}known {self.kind}s: {', '.join(known)}",
        )

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
