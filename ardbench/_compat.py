"""Import shims for third-party packages, kept in one place.

- robustbench 1.1.1 does ``from autoattack import AutoAttack``; the reference attack code is on
  PyPI as ``pyautoattack`` (there is no ``autoattack`` distribution), so we register it under
  that name before robustbench is imported.
- robustbench 1.1.1 imports ``pkg_resources``: setuptools<81 (pinned in pyproject) provides it.
- pyautoattack logs at DEBUG through the root logger when it is configured; we quieten it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from types import ModuleType


def import_autoattack() -> ModuleType:
    """The AutoAttack package (``pyautoattack``), also importable as ``autoattack`` afterwards."""
    module = importlib.import_module("pyautoattack")
    sys.modules.setdefault("autoattack", module)
    for name in list(sys.modules):
        if name.startswith("pyautoattack."):
            sys.modules.setdefault("autoattack." + name.split(".", 1)[1], sys.modules[name])
    logging.getLogger("pyautoattack").setLevel(logging.WARNING)
    return module


def import_robustbench() -> ModuleType:
    import_autoattack()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation noise
        return importlib.import_module("robustbench")
