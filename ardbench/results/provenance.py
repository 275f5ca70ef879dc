"""What produced a run: the code (git sha, dirty flag, the method's own source), the libraries
and the machine. These blocks go into the record (:func:`ardbench.results.records.build_record`).

The method's source (:func:`method_source_files`):

- a built-in method or one from an installed package (entry point): its module file;
- a submitted method (``baselines/contrib/<name>/method.py``): every file of its folder,
  recursively, except Python's bytecode caches (``__pycache__/``, ``*.pyc``), which importing
  the method writes there.

:func:`method_source_sha256` is the sha256 of the module file itself, or for a folder the
sha256 of the lines ``<sha256 of file>  <path relative to the folder>`` (``sha256sum``'s
format), one per file in sorted path order, so that it can be recomputed by hand::

    cd baselines/contrib/NAME && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \\
        | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..io import file_sha256

__all__ = [
    "code_version",
    "hardware",
    "library_versions",
    "method_source_files",
    "method_source_sha256",
]

# the checkout the package runs from (ardbench/results/provenance.py -> the repository)
CHECKOUT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, check=True
    ).stdout


def _untracked(files: Sequence[Path]) -> bool | None:
    """Whether any of ``files`` inside the checkout is not tracked by git (ignored files
    included: they are not in the commit either). None when git cannot say."""
    inside = []
    for f in files:
        try:
            inside.append(Path(f).resolve().relative_to(CHECKOUT).as_posix())
        except ValueError:  # outside the checkout: its hash is its identity
            continue
    if not inside:
        return False
    try:
        tracked = set(_git("ls-files", "-z", "--", *inside).split("\0"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return any(rel not in tracked for rel in inside)


def code_version(method_files: Sequence[Path] = ()) -> dict[str, Any]:
    """git sha + dirty flag of the checkout the package runs from, else the installed version.

    ``dirty``: a tracked file was modified, or one of ``method_files`` (the method's own
    source, see :func:`method_source_files`) is not tracked, so that a submitted method that
    was never committed does not pass as clean."""
    try:
        sha = _git("rev-parse", "HEAD").strip()
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "dirty": None, "version": _version("ardbench")}
    if dirty:
        return {"git_sha": sha, "dirty": True, "version": _version("ardbench")}
    # clean checkout: dirty when a file of the method's source is untracked (None: unknown)
    return {"git_sha": sha, "dirty": _untracked(method_files), "version": _version("ardbench")}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{
            d: _version(d)
            for d in ("torchvision", "numpy", "pandas", "pyautoattack", "robustbench")
        },
    }


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _is_cache(rel: Path) -> bool:
    return "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo")


def method_source_files(cls: type) -> tuple[Path, list[Path]] | None:
    """(root, files) of a method class's source: a contrib method's folder and its files, or
    the module file twice over; None when the class has no source file (defined in an
    interactive session)."""
    from ..methods.contrib import METHOD_FILE, module_name

    module = sys.modules.get(getattr(cls, "__module__", ""))
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    if path.name == METHOD_FILE and cls.__module__ == module_name(path):
        folder = path.parent
        files = sorted(
            (p for p in folder.rglob("*") if p.is_file() and not _is_cache(p.relative_to(folder))),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
        return folder, files
    return path, [path]


def method_source_sha256(cls: type) -> str | None:
    """The sha256 of the method's source (see the module docstring), or None without one."""
    found = method_source_files(cls)
    if found is None:
        return None
    root, files = found
    if root.is_file():
        return file_sha256(root)
    lines = "".join(f"{file_sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()
