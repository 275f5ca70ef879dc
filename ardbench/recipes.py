"""Recipes: method + method config + protocol + teacher + student, resolved into a RunConfig.

A recipe file (``baselines/<method>/<name>.yaml``, ``baselines/common/<name>.yaml`` for any
method, or any path) states only what differs from its protocol::

    method: rslad                      # omitted in baselines/common/ (any method)
    protocol: rslad-cifar10            # a named protocol (ardbench list protocols)
    teacher: robustbench:Zhang2019Theoretically
    student: resnet18
    method_config: {teacher_norm_c100: cifar10_constants}   # only keys that differ
    train: {lr: 0.01}                  # only protocol values that differ (rare)
    paper: {source: "RSLAD ICCV'21, Table 3", tag: checked, rule: best-on-test, aa: 51.49}

Layers, later wins: the protocol (``--protocol``, else the recipe's, else the method's own
faithful protocol for the dataset, else ``standard-<dataset>``), with its ``per_method`` keys
taken from the method's faithful protocol < the recipe < command-line flags < ``--set``.
Everything is validated here, before a run directory exists.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .methods import get_method
from .paths import baselines_dir
from .protocols import PROTOCOLS, Protocol, faithful_protocol, get_protocol
from .protocols.run_config import TOP_LEVEL, RunConfig
from .protocols.sections import SECTIONS, section_dict, unknown_key
from .recipe_paths import anchor_paths
from .safe_yaml import load_yaml, parse_scalar

__all__ = [
    "PRESETS",
    "RECIPE_KEYS",
    "find_recipe",
    "list_recipes",
    "load_recipe_file",
    "merge",
    "parse_set",
    "place_overrides",
    "resolve_config",
]

# Built-in recipes that need no file (they work from an installed package): the demo runs the
# whole pipeline in minutes on a CPU; its teacher "demo" is a small PGD-AT network trained on
# first use and cached.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {"protocol": "demo", "teacher": "demo", "student": "small_cnn"},
}

# what a recipe file may say (device, paths and download are per machine: flags only)
RECIPE_KEYS = (
    "method",
    "protocol",
    "method_config",
    "dataset",
    "teacher",
    "student",
    *SECTIONS,
    "paper",
)
COMMON = "common"  # baselines/common/: recipes for any method


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge (sections and method_config merge; scalars replace)."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    data = load_yaml(path, "recipe") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping at the top level")
    for key, value in data.items():
        if key not in RECIPE_KEYS:
            raise unknown_key(str(key), RECIPE_KEYS, f"recipe {path}")
        if key in (*SECTIONS, "method_config") and not isinstance(value, dict):
            raise ConfigError(f"recipe {path}: {key} must be a mapping, got {value!r}")
        if key in SECTIONS:
            fields = {f.name for f in dataclasses.fields(SECTIONS[key])}
            for sub in value:
                if sub not in fields:
                    raise unknown_key(str(sub), fields, f"recipe {path}: {key}")
    return data


def _recipe_dirs(method: str | None) -> list[Path]:
    root = baselines_dir()
    if root is None:  # an installed package: built-in presets and paths only
        return []
    dirs = [root / method, root / "contrib" / method] if method else []
    return [*dirs, root / COMMON]


def find_recipe(method: str | None, recipe: str) -> Path | dict[str, Any]:
    """A recipe path, a name under baselines/<method>/, contrib/<method>/ or common/, or a
    built-in preset (returned as its layer)."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"recipe file {path} does not exist")
        return path  # load_yaml refuses what is not a regular file
    for folder in _recipe_dirs(method):
        candidate = folder / f"{recipe}.yaml"
        if candidate.is_file():
            return candidate
    if recipe in PRESETS:
        return dict(PRESETS[recipe])
    known = sorted(
        {p.stem for d in _recipe_dirs(method) if d.is_dir() for p in d.glob("*.yaml")}
        | set(PRESETS)
    )
    close = difflib.get_close_matches(recipe, known, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"no recipe {recipe!r} for method {method!r}",
        hint=f"{guess}known: {', '.join(known) or 'none'}; or pass a path to a YAML file",
    )


def list_recipes() -> list[tuple[str, str, Path | None]]:
    """(method or "(any)", recipe name, path) for every recipe: per-method folders, contrib,
    common (any method) and the built-in presets (no path)."""
    root = baselines_dir()
    out: list[tuple[str, str, Path | None]] = []
    files = sorted(root.glob("*/*.yaml")) + sorted(root.glob("contrib/*/*.yaml")) if root else []
    for path in files:
        method = "(any)" if path.parent.name == COMMON else path.parent.name
        out.append((method, path.stem, path))
    out += [("(any)", name, None) for name in PRESETS]
    return out


def parse_set(items: Iterable[str], method_config_keys: Iterable[str] = ()) -> dict[str, Any]:
    """``--set train.epochs=5 --set adv_weight=0.5`` -> nested dict.

    A dotted key names its section (attack, train, eval, checkpoint, method_config). A bare key
    is a top-level field if there is one, else the one section that has it; ambiguous bare keys
    are errors that list the dotted spellings.
    """
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        pairs.append((key.strip(), parse_scalar(raw, f"--set {key.strip()}")))
    return place_overrides(pairs, method_config_keys)


def place_overrides(
    items: Mapping[str, Any] | Iterable[tuple[str, Any]],
    method_config_keys: Iterable[str] = (),
    where: str = "--set",
) -> dict[str, Any]:
    """(key, value) pairs with keys as ``--set`` takes them (dotted, or bare when one place has
    the key; a section name with a mapping sets several of its keys) -> the nested layer."""
    method_keys = set(method_config_keys)
    sections = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in SECTIONS.items()}
    out: dict[str, Any] = {}
    pairs = items.items() if isinstance(items, Mapping) else items
    for key, value in pairs:
        if key in (*SECTIONS, "method_config") and isinstance(value, Mapping):
            for sub, v in value.items():
                out.setdefault(key, {})[str(sub)] = v
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            if section not in (*SECTIONS, "method_config"):
                raise unknown_key(section, (*SECTIONS, "method_config"), f"{where} sections")
        elif key in TOP_LEVEL and key not in SECTIONS:
            out[key] = value
            continue
        else:
            homes = [s for s, keys in sections.items() if key in keys]
            if key in method_keys:
                homes.append("method_config")
            if not homes:
                known = set(TOP_LEVEL) | method_keys
                for keys in sections.values():
                    known |= keys
                raise unknown_key(key, known, where)
            if len(homes) > 1:
                raise ConfigError(
                    f"{where} {key} is ambiguous",
                    hint=f"write one of {', '.join(h + '.' + key for h in homes)}",
                )
            section, sub = homes[0], key
        out.setdefault(section, {})[sub] = value
    return out


def _protocol_for(name: str | None, method: str, dataset: str | None) -> Protocol:
    if name and name != "faithful":
        return get_protocol(name)
    own = faithful_protocol(method, dataset)
    if own is not None:
        return own
    standard = f"standard-{dataset or 'cifar10'}"
    return get_protocol(standard if standard in PROTOCOLS else "standard-cifar10")


def protocol_layer(protocol: Protocol, method: str) -> dict[str, Any]:
    """The protocol's settings, with its ``per_method`` keys from the method's own protocol."""
    layer = protocol.sections()
    own = faithful_protocol(method, protocol.dataset)
    for key in protocol.per_method:
        section, _, sub = key.partition(".")
        if own is not None:
            layer[section][sub] = section_dict(getattr(own, section))[sub]
    return layer


def resolve_config(
    method: str | None,
    *,
    protocol: str | None = None,
    preset: str | None = None,
    recipe: str | None = None,
    cli: dict[str, Any] | None = None,
    sets: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
    default_method: str | None = None,
) -> RunConfig:
    """Merge the layers into a validated RunConfig (method_config checked by the method).

    ``overrides`` are ``--set`` as Python values (``{"train.lr": 0.05, "beta": 6}``; the Python
    API's keyword arguments), applied after ``sets``. ``default_method``: the method when
    neither ``method`` nor the recipe names one."""
    if preset and recipe:
        raise ConfigError("pass either --preset or --recipe, not both")
    layer: dict[str, Any] = {}
    provenance = None
    recipe_file: Path | None = None
    name = recipe or preset
    if name:
        # --preset NAME and --recipe NAME look alike: the method's own recipe of that name
        # first (mtard's demo names its clean teacher), then common/, then the built-in one
        found = find_recipe(method, name)
        if isinstance(found, Path):
            layer = load_recipe_file(found)
            provenance, recipe_file = _recipe_name(found), found
        else:
            layer, provenance = dict(found), f"preset:{name}"
    method = method or layer.get("method") or default_method
    if method is None:
        raise ConfigError("no method given", hint="pass --method NAME (ardbench list methods)")
    if layer.get("method") not in (None, method):
        raise ConfigError(f"recipe {provenance} is for method {layer['method']!r}, not {method!r}")
    cls = get_method(method)
    cli = dict(cli or {})
    for key in cli:
        if key not in TOP_LEVEL:
            raise unknown_key(key, TOP_LEVEL, "command-line flags")
    method_keys = [f.name for f in dataclasses.fields(cls.Config)]
    set_layer = merge(
        parse_set(sets, method_keys),
        place_overrides(overrides or {}, method_keys, where="override"),
    )
    dataset = set_layer.get("dataset") or cli.get("dataset") or layer.get("dataset")
    chosen = _protocol_for(
        protocol or set_layer.get("protocol") or cli.get("protocol") or layer.get("protocol"),
        method,
        dataset,
    )
    merged: dict[str, Any] = {"method": method, "protocol": chosen.name}
    # relative paths of the recipe and the protocol, found from where they are written
    root = baselines_dir()
    checkout = root.parent if root is not None else None
    merged = merge(merged, anchor_paths(protocol_layer(chosen, method), None, checkout))
    layer = anchor_paths(layer, recipe_file, checkout)
    merged = merge(merged, {k: v for k, v in layer.items() if k != "protocol"})
    merged = merge(merged, {k: v for k, v in cli.items() if k != "protocol"})
    merged = merge(merged, {k: v for k, v in set_layer.items() if k != "protocol"})
    merged["method"] = method
    if provenance and "recipe" not in merged:
        merged["recipe"] = provenance
    mc = cls.Config.from_dict(merged.get("method_config", {}), where=f"method_config of {method!r}")
    merged["method_config"] = mc.to_dict()
    return RunConfig.from_dict(merged)


def _recipe_name(path: Path) -> str:
    root = baselines_dir()
    try:
        return str(path.resolve().relative_to(root.resolve().parent)) if root else str(path)
    except ValueError:
        return str(path)
