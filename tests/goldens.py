"""The golden files of the built-in protocols and method configs (a helper module, not tests).

They pin what ardbench itself ships: a submitted method (``baselines/contrib/<name>/`` or an
installed plug-in) and a protocol registered for one are not pinned, so following the README's
submission walkthrough never breaks them, while a built-in that is removed, renamed or changed
still does. ``ARDBENCH_UPDATE_GOLDEN=1`` rewrites them (review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ardbench.methods import METHODS
from ardbench.protocols import all_protocols

GOLDEN = Path(__file__).parent / "golden"


def is_builtin_method(name: str) -> bool:
    """A method of the package itself (``ardbench.methods.<module>``)."""
    return METHODS.get(name).__module__.startswith("ardbench.")


def builtin_method_configs() -> dict[str, Any]:
    return {n: METHODS.get(n).Config().to_dict() for n in METHODS.names() if is_builtin_method(n)}


def builtin_protocols() -> dict[str, Any]:
    """Every protocol except those registered for a submitted method."""
    out = {}
    for p in all_protocols():
        if p.method is not None and p.method in METHODS and not is_builtin_method(p.method):
            continue
        d = p.to_dict()
        d.pop("description")  # prose: free to improve
        out[p.name] = d
    return out


CURRENT = {"protocols": builtin_protocols, "method_configs": builtin_method_configs}


def golden_problems(name: str) -> list[str]:
    """What differs between the golden file ``name`` and the registries now (empty: none)."""
    path = GOLDEN / f"{name}.json"
    now = json.loads(json.dumps(CURRENT[name]()))
    if os.environ.get("ARDBENCH_UPDATE_GOLDEN"):
        path.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
    golden = json.loads(path.read_text())
    problems = [
        f"built-in {key!r} was removed or renamed" for key in sorted(set(golden) - set(now))
    ]
    problems += [
        f"built-in {key!r} is not in the golden file" for key in sorted(set(now) - set(golden))
    ]
    problems += [
        f"{key!r} changed" for key in sorted(set(golden) & set(now)) if now[key] != golden[key]
    ]
    return problems
