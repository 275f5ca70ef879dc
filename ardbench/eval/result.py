"""What an evaluation measured (:class:`EvalResult`); the column names and titles re-exported.

Kept free of torch so that the CLI and the results layer can import the column names and the
result type without loading the attack code.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from .. import __version__
from ..protocols.builtin_columns import AA_ATTACKS
from ..protocols.columns import COLUMN_TITLES, COLUMNS
from ..protocols.eps import format_eps

__all__ = ["AA_ATTACKS", "COLUMNS", "COLUMN_TITLES", "EvalResult", "dist_version", "versions"]

# COLUMNS, COLUMN_TITLES: live views of the column registry (ardbench.protocols.columns)


def dist_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The versions an evaluation records (the numbers can depend on every one of them)."""
    import numpy
    import torch

    return {
        "ardbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pyautoattack": dist_version("pyautoattack"),
        "robustbench": dist_version("robustbench"),
    }


@dataclass
class EvalResult:
    """What :func:`~ardbench.eval.core.evaluate_model` measured. Accuracies are fractions in [0, 1].

    Every column counts point-wise worst case (an attacked point is robust only when it is also
    classified correctly clean). ``per_class[column][c]`` is that column's accuracy on the
    points of class ``c`` (``None`` when the evaluated points hold no point of class ``c``);
    ``worst_class[column]`` is its minimum over the classes present (the robust-fairness
    papers' "worst-class" accuracy), for clean and every attacked column alike.
    """

    accuracy: dict[str, float]
    per_class: dict[str, list[float | None]]
    worst_class: dict[str, float]
    settings: dict[str, dict[str, Any]]
    n_examples: int
    eps: float
    norm: str
    seed: int
    batch_size: int
    num_classes: int
    timing_s: dict[str, float]
    points_per_s: dict[str, float]
    aa_breakdown: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    compliance: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] | None = None  # spec, arch, sha256, source (evaluate_spec)
    data: dict[str, Any] | None = None  # spec, fingerprint (evaluate_spec)
    cross_check: dict[str, Any] | None = None
    resumed: bool = False

    @property
    def aa_unreliable(self) -> bool:
        """True when AutoAttack's own checks fired (RobustBench's ``unreliable`` flag)."""
        return any(w.startswith("autoattack:") for w in self.warnings)

    def worst_class_index(self, column: str) -> int | None:
        """The class whose accuracy is ``worst_class[column]`` (the lowest index on a tie)."""
        present = [(v, c) for c, v in enumerate(self.per_class.get(column, [])) if v is not None]
        return min(present)[1] if present else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the eval block of a run record and the ``--json`` output."""
        d: dict[str, Any] = {
            "n_examples": self.n_examples,
            "eps": self.eps,
            "eps_str": format_eps(self.eps),
            "norm": self.norm,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_classes": self.num_classes,
            "attacks": list(self.accuracy),
            "accuracy": dict(self.accuracy),
            "worst_class": dict(self.worst_class),
            "per_class": {k: list(v) for k, v in self.per_class.items()},
            "settings": json.loads(json.dumps(self.settings)),
            "timing_s": dict(self.timing_s),
            "points_per_s": dict(self.points_per_s),
            "aa_breakdown": dict(self.aa_breakdown),
            "aa_unreliable": self.aa_unreliable,
            "warnings": list(self.warnings),
            "compliance": json.loads(json.dumps(self.compliance)),
            "versions": dict(self.versions),
        }
        for name in ("model", "data", "cross_check"):
            value = getattr(self, name)
            if value is not None:
                d[name] = json.loads(json.dumps(value))
        return d
