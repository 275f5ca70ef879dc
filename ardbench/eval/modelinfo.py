"""A RobustBench ``model_info`` entry for an evaluation (``../shared/reference/methods.md`` §4).

(Named ``modelinfo``, not ``model_info``: a submodule of that name would shadow the function
``ardbench.eval.model_info`` once imported.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..errors import ConfigError
from ..protocols.columns import COLUMNS, get_column
from ..protocols.eps import format_eps
from .result import EvalResult

__all__ = ["PLACEHOLDER", "dataset_name", "model_info"]

PLACEHOLDER = "<fill in>"


def _pct(value: float | None) -> str | None:
    """RobustBench writes accuracies as percent strings with two decimals."""
    return None if value is None else f"{100 * value:.2f}"


def dataset_name(spec: str, num_classes: int) -> str:
    """RobustBench's dataset name for a dataset spec (the spec itself when not CIFAR)."""
    s = spec.lower()
    if "cifar100" in s or (num_classes == 100 and "cifar" in s):
        return "cifar100"
    if "cifar10" in s:
        return "cifar10"
    return spec


def model_info(
    result: EvalResult,
    *,
    dataset: str = "cifar10",
    architecture: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A RobustBench ``model_info`` entry for ``result`` (reference §4).

    ``metadata`` fills the paper fields (``link``, ``name``, ``authors``, ``venue``,
    ``architecture``, ``additional_data``, ``reported`` in percent, ``footnote``); missing ones
    are the placeholder ``"<fill in>"``. ``external`` is the lowest accuracy of another attack
    (each column registered with ``model_info="external"``: FGSM / PGD-20 / CW; and the
    robustbench cross-check) when it is below AutoAttack's;
    ``unreliable`` is true when AutoAttack's own checks fired.
    """
    meta = dict(metadata or {})
    roles = {k: get_column(k).model_info if k in COLUMNS else "none" for k in result.accuracy}
    robust = [k for k, role in roles.items() if role == "autoattack"]
    clean = [k for k, role in roles.items() if role == "clean"]
    if not robust or not clean:
        raise ConfigError("model_info needs the AutoAttack column: run with attacks including aa")
    aa = result.accuracy[robust[0]]
    # every registered column whose role is "external" (FGSM, PGD-20, CW, a PGD variant...)
    others = [result.accuracy[k] for k, role in roles.items() if role == "external"]
    if result.cross_check and "aa" in result.cross_check:
        others.append(float(result.cross_check["aa"]))
    lower = [v for v in others if v < aa]
    reported = meta.get("reported")
    if isinstance(reported, (int, float)) and not isinstance(reported, bool):
        reported = f"{float(reported):.2f}"
    footnote = meta.get("footnote")
    if footnote is None:
        spec = (result.model or {}).get("spec", "model")
        footnote = (
            f"{PLACEHOLDER} method, recipe, teacher, epochs, seeds. Evaluated by ardbench "
            f"{__version__} on the first {result.n_examples} test points of "
            f"{(result.data or {}).get('spec', dataset)} ({spec}), seed {result.seed}."
        )
    return {
        "link": meta.get("link", PLACEHOLDER),
        "name": meta.get("name", PLACEHOLDER),
        "authors": meta.get("authors", PLACEHOLDER),
        "additional_data": bool(meta.get("additional_data", False)),
        "number_forward_passes": 1,
        "dataset": meta.get("dataset", dataset),
        "venue": meta.get("venue", PLACEHOLDER),
        "architecture": meta.get("architecture", architecture or PLACEHOLDER),
        "eps": format_eps(result.eps),
        "clean_acc": _pct(result.accuracy[clean[0]]),
        "reported": reported,
        "autoattack_acc": _pct(aa),
        "external": _pct(min(lower)) if lower else None,
        "unreliable": result.aa_unreliable,
        "footnote": footnote,
    }
