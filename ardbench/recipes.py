"""Presets and recipe files, and the one function that resolves a run's configuration.

Layers, later wins: library defaults < ``Method.faithful`` (the official code's protocol) <
preset or recipe < CLI flags < ``--set``. A recipe only has to say what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .methods import get_method
from .paths import baselines_dir
from .protocols.config import (
    ConfigError,
    RunConfig,
    build_run_config,
    load_recipe_file,
    merge,
    parse_set,
    validate_layer,
)

# The demo: the whole pipeline in miniature on the embedded digits data, a few minutes on a
# 2-core CPU. The teacher spec "demo" is a small PGD-AT network trained on first use and cached.
DEMO_PRESET: dict[str, Any] = {
    "dataset": "digits",
    "teacher": "demo",
    "student": "small_cnn",
    "attack": {"eps": 8 / 255, "step": 2 / 255, "steps": 5},
    "train": {
        "epochs": 12,
        "batch_size": 64,
        "lr": 0.1,
        "weight_decay": 5e-4,
        "lr_schedule": "multistep",
        "milestones": [10],
        "seed": 0,
    },
    "eval": {"attacks": ["clean", "pgd20"]},
}

PRESETS: dict[str, dict[str, Any]] = {"demo": DEMO_PRESET}


def find_recipe(method: str, recipe: str) -> Path:
    """A recipe path, or a name looked up as baselines/<method>/<name>.yaml."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    root = baselines_dir()
    for candidate in (
        root / method / f"{recipe}.yaml",
        root / "contrib" / method / f"{recipe}.yaml",
    ):
        if candidate.is_file():
            return candidate
    known = (
        [p.stem for p in sorted((root / method).glob("*.yaml"))] if (root / method).is_dir() else []
    )
    raise ConfigError(
        f"no recipe {recipe!r} for method {method!r} under {root}. "
        f"Known: {', '.join(known) or 'none'}; or pass a path to a YAML file."
    )


def list_recipes() -> list[tuple[str, str, Path]]:
    """(method, recipe name, path) for every recipe file under baselines/ (contrib included)."""
    root = baselines_dir()
    out: list[tuple[str, str, Path]] = []
    for path in sorted(root.glob("*/*.yaml")) + sorted(root.glob("contrib/*/*.yaml")):
        # baselines/tracks/ holds method-free recipes (data, teacher, budget) for any method
        method = "(any)" if path.parent.name == "tracks" else path.parent.name
        out.append((method, path.stem, path))
    return out


def resolve_config(
    method: str | None,
    *,
    preset: str | None = None,
    recipe: str | None = None,
    cli: dict[str, Any] | None = None,
    sets: Iterable[str] = (),
) -> RunConfig:
    """Merge the layers into a validated RunConfig (method_config checked by the method)."""
    if preset and recipe:
        raise ConfigError("pass either --preset or --recipe, not both")
    layer: dict[str, Any] = {}
    provenance = None
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
        layer = dict(PRESETS[preset])
        provenance = f"preset:{preset}"
    elif recipe:
        if method is None:
            path = Path(recipe)
            layer = load_recipe_file(path)
        else:
            path = find_recipe(method, recipe)
            layer = load_recipe_file(path)
        provenance = _recipe_name(path)
    name = method or layer.get("method")
    if name is None:
        raise ConfigError("no method given: pass --method NAME (ardbench list methods)")
    if method and layer.get("method") not in (None, method):
        raise ConfigError(f"recipe is for method {layer['method']!r}, not {method!r}")
    cls = get_method(name)
    if preset == "demo" and cls.demo:
        layer = merge(layer, cls.demo)  # e.g. a second demo network the method needs
    cli = dict(cli or {})
    validate_layer(cli, "command-line flags")
    set_layer = parse_set(sets, method_config_keys=_config_keys(cls))
    merged: dict[str, Any] = {"method": name}
    merged = merge(merged, {k: v for k, v in cls.faithful.items()})
    merged = merge(merged, layer)
    merged = merge(merged, cli)
    merged = merge(merged, set_layer)
    merged["method"] = name
    if provenance and "recipe" not in merged:
        merged["recipe"] = provenance
    # validate and normalise method_config against the method's own Config
    mc = cls.Config.from_dict(merged.get("method_config", {}), where=f"method_config of {name!r}")
    merged["method_config"] = mc.to_dict()
    return build_run_config(merged)


def _config_keys(cls: type) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls.Config)]


def _recipe_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(baselines_dir().resolve().parent))
    except ValueError:
        return str(path)
