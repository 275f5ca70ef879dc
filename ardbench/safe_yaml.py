"""YAML from strangers: plain data only, no aliases, bounded size.

``yaml.safe_load`` already refuses tags that construct objects; this loader also refuses
anchors and aliases (a few lines of aliases expand to gigabytes: the "billion laughs"), and
files over :data:`MAX_BYTES`. Every recipe and sweep file is read through :func:`load_yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_BYTES = 1 << 20  # a recipe is a few hundred bytes; a megabyte is already absurd


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML aliases are not allowed (line {event.start_mark.line + 1})",
                hint="write the values out",
            )
        node = super().compose_node(parent, index)
        if node is not None and getattr(node, "anchor", None):
            raise ConfigError(
                f"YAML anchors are not allowed (line {node.start_mark.line + 1})",
                hint="write the values out",
            )
        return node


def load_yaml_text(text: str, what: str) -> Any:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None


def load_yaml(path: str | Path, what: str = "YAML file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read as UTF-8 text: {exc}") from None
    return load_yaml_text(text, f"{what} {path}")
