"""Submitted methods: ``baselines/contrib/<name>/method.py``, discovered automatically.

Each folder holds ``method.py`` (a ``Method`` subclass decorated with
``@register_method("<name>")``; by convention the folder is named after the method, which is
where ``--recipe NAME`` looks for ``<name>/NAME.yaml``), its recipes (``*.yaml``) and a
``README.md``. The files are imported by path under a unique module name
(``ardbench_contrib_<folder>_<hash of the path>``), so two folders never collide and nothing
needs to be on ``sys.path``; a file that fails to import is reported by its path.

The other way in, an installed package with an entry point in the group ``ardbench.methods``,
is handled by the registry itself (:mod:`ardbench.registry`).

The registry calls :func:`load_contrib_methods` before its first lookup (a loader added in
``ardbench/methods/__init__.py``); calling it again is cheap and imports only folders not seen
yet (for example after ``ARDBENCH_BASELINES`` changed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from ..errors import ArdbenchError
from ..paths import baselines_dir

__all__ = ["ContribError", "contrib_dir", "discover_contrib", "load_contrib_methods"]

METHOD_FILE = "method.py"

# resolved path of a method.py -> its module (imported once per process)
_LOADED: dict[Path, ModuleType] = {}


class ContribError(ArdbenchError, ImportError, ValueError):
    """One or more ``baselines/contrib/*/method.py`` files failed to import (each named, with
    the line); the command line prints it as a user error."""


def contrib_dir(root: str | Path | None = None) -> Path | None:
    """``<baselines>/contrib`` (``root`` defaults to :func:`ardbench.paths.baselines_dir`;
    None when there is no baselines folder: an installed package without ARDBENCH_BASELINES)."""
    base = Path(root) if root is not None else baselines_dir()
    return base / "contrib" if base is not None else None


def discover_contrib(root: str | Path | None = None) -> list[Path]:
    """Every ``contrib/<name>/method.py`` under the baselines directory, sorted; folders
    starting with '.' or '_' are skipped."""
    folder = contrib_dir(root)
    if folder is None or not folder.is_dir():
        return []
    return [
        p
        for p in sorted(folder.glob(f"*/{METHOD_FILE}"))
        if not p.parent.name.startswith((".", "_"))
    ]


def module_name(path: Path) -> str:
    """A module name unique to this file: folder name + a hash of the resolved path."""
    resolved = Path(path).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    folder = re.sub(r"\W", "_", resolved.parent.name)
    return f"ardbench_contrib_{folder}_{digest}"


def _import_file(path: Path) -> ModuleType:
    name = module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # registered before execution: dataclasses and pickling look the module up by name
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _line_in(exc: BaseException, path: Path) -> str:
    """ ", line N" of the innermost frame of ``exc``'s traceback that is in ``path``."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f", line {exc.lineno}"
    line = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = f", line {frame.lineno}"
    return line


def load_contrib_methods(root: str | Path | None = None) -> list[str]:
    """Import every contributed ``method.py`` not imported yet (which registers its methods).

    Returns the module names imported by this call. Files that fail are skipped and reported
    together in one :class:`ContribError` (after the others have been imported), each with its
    path and the error.
    """
    imported, failures = [], []
    for path in discover_contrib(root):
        resolved = path.resolve()
        if resolved in _LOADED:
            continue
        try:
            module = _import_file(resolved)
        except Exception as exc:
            failures.append(f"{path}{_line_in(exc, resolved)}: {type(exc).__name__}: {exc}")
            continue
        _LOADED[resolved] = module
        imported.append(module.__name__)
    if failures:
        raise ContribError("submitted method file(s) failed to import:\n  " + "\n  ".join(failures))
    return imported
