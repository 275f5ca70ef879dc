"""YAML from strangers: plain data only, no aliases, bounded size and depth, unique keys.

``yaml.safe_load`` already refuses tags that construct objects; this loader also refuses
anchors and aliases (a few lines of aliases expand to gigabytes: the "billion laughs"),
nesting deeper than :data:`MAX_DEPTH` (the composer recurses: 30,000 brackets would be a
RecursionError), a key given twice in one mapping (``train:`` twice: the last would win
silently) and files over :data:`MAX_BYTES`. Every recipe, sweep file and ``--set`` value is
read through this module (:func:`load_yaml`, :func:`load_yaml_text`, :func:`parse_scalar`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, first_line

MAX_BYTES = 1 << 20  # a recipe is a few hundred bytes; a megabyte is already absurd
MAX_DEPTH = 32  # a recipe nests three levels


class YAMLLimitError(ConfigError):
    """Valid YAML that this loader refuses: an alias, an anchor, too deep, a repeated key."""


class _NoAliasLoader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLLimitError(
                f"YAML aliases are not allowed (line {event.start_mark.line + 1})",
                hint="write the values out",
            )
        if self._depth >= MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise YAMLLimitError(f"YAML nested more than {MAX_DEPTH} deep (line {line})")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and getattr(node, "anchor", None):
            raise YAMLLimitError(
                f"YAML anchors are not allowed (line {node.start_mark.line + 1})",
                hint="write the values out",
            )
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise YAMLLimitError(
                            f"YAML key {key!r:.60} appears twice in one mapping (lines "
                            f"{seen[key]} and {line})",
                            hint="keep one of them",
                        )
                    seen[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    pass
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, what: str) -> Any:
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ConfigError(f"{what} is larger than {MAX_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except YAMLLimitError as exc:
        raise YAMLLimitError(f"{what}: {exc.message}", hint=exc.hint) from None
    except ConfigError:
        raise
    except RecursionError:  # a safety net under MAX_DEPTH
        raise YAMLLimitError(f"{what} is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise YAMLLimitError(f"{what}: {first_line(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} is not valid YAML{where}: {problem}") from None


def load_yaml(path: str | Path, what: str = "YAML file") -> Any:
    from .io import UnreadableFileError, read_bounded

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    if path.is_file() and path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_BYTES} bytes")
    try:  # a regular file only: never a FIFO (hangs) or a device (endless)
        text = read_bounded(path, limit=MAX_BYTES).decode("utf-8")
    except UnreadableFileError as exc:
        raise ConfigError(f"{what} {path}: {exc.reason}", hint=exc.hint) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} cannot be read as UTF-8 text: {exc}") from None
    return load_yaml_text(text, f"{what} {path}")


def parse_scalar(text: str, what: str) -> Any:
    """A ``--set`` value: YAML through the same limits; text that is not YAML stays text."""
    try:
        return load_yaml_text(text, what)
    except YAMLLimitError:
        raise
    except ConfigError:
        return text
