"""Relative paths in a recipe found from where the recipe is, not only from the working
directory (issue 27).

The checkout's recipes and small-track protocols name files as ``../shared/data/...``,
relative to the checkout root, so ``ardbench run --recipe ...`` worked only when started
there. A relative path (in ``teacher``, ``student``, ``dataset`` — ``npz:A.npz+B.npz`` —
and ``data_dir``) that does not exist from the working directory is looked up from the
recipe file's own folder and then each folder above it, and, for a built-in protocol's
data, from the checkout root; the first place it exists is used (written into the config
as an absolute path). A path found nowhere is left as written: loading it then fails with
the file's name. From the checkout root nothing changes (the path exists as written), so
configs and their hashes stay those of the committed records.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["anchor_paths"]

_NPZ = "npz:"
_NPZ_SPLIT = re.compile(r"(?<=\.npz)\+", re.IGNORECASE)
_SCHEMES = ("run:", "robustbench:")


def _anchors(recipe: Path | None, checkout: Path | None) -> list[Path]:
    found: list[Path] = []
    if recipe is not None:
        folder = recipe.resolve().parent
        found += [folder, *folder.parents]
    if checkout is not None:
        found.append(checkout.resolve())
    return found


def _find(text: str, anchors: list[Path]) -> str:
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return text
    for base in anchors:
        candidate = base / path
        if candidate.exists():
            return str(candidate.resolve())
    return text


def _model_spec(spec: str, anchors: list[Path]) -> str:
    from .models import ARCHS

    if spec.startswith(_SCHEMES):
        return spec
    head, sep, tail = spec.partition(":")
    if sep and head in ARCHS.names():  # ARCH:PATH
        return f"{head}:{_find(tail, anchors)}"
    if sep or "/" not in spec and "\\" not in spec:  # another scheme, or a bare name
        return spec
    return _find(spec, anchors)


def anchor_paths(
    config: dict[str, Any], recipe: Path | None, checkout: Path | None
) -> dict[str, Any]:
    """``config`` (a merged layer) with its relative paths found as the module doc says."""
    anchors = _anchors(recipe, checkout)
    if not anchors:
        return config
    out = dict(config)
    for key in ("teacher", "student"):
        if isinstance(out.get(key), str):
            out[key] = _model_spec(out[key], anchors)
    dataset = out.get("dataset")
    if isinstance(dataset, str) and dataset.startswith(_NPZ):
        parts = _NPZ_SPLIT.split(dataset[len(_NPZ) :])
        out["dataset"] = _NPZ + "+".join(_find(p, anchors) for p in parts)
    if isinstance(out.get("data_dir"), str):
        out["data_dir"] = _find(out["data_dir"], anchors)
    return out
