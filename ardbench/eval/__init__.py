"""The evaluator: the registered columns (clean, FGSM, PGD-20, CW-inf, AutoAttack and any
registered with :func:`ardbench.protocols.columns.register_column`); compliance; model_info.

=================  ===============================================================
``result``         :class:`EvalResult`, the column names and titles (no torch)
``settings``       :class:`EvalSpec`, an evaluation's validated settings (no torch)
``columns``        the built-in columns' code: per-point starts, FGSM / PGD / CW points
``runners``        one column's run (:class:`ColumnRun`), the per-point runner
``autoattack``     the AutoAttack adapter (pyautoattack's call, its state, its warnings)
``state``          the resumable per-point state of the other columns
``core``           :func:`evaluate_model`: columns over chunks, fp32, batch sizes
``compliance``     RobustBench-style checks of the model
``modelinfo``      the RobustBench ``model_info`` entry
``crosscheck``     :func:`robustbench_cross_check`
``spec``           :func:`evaluate_spec`: model and dataset specs -> evaluation -> files
``render``         :func:`render_eval`
=================  ===============================================================

The names below are imported on first use, so that importing :mod:`ardbench.eval.result` (the
CLI does) does not load torch and the attack code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AA_ATTACKS": "result",
    "COLUMNS": "result",
    "COLUMN_TITLES": "result",
    "EvalResult": "result",
    "EvalSpec": "settings",
    "adversarial_examples": "columns",
    "column_settings": "columns",
    "parse_attacks": "columns",
    "CheckResult": "compliance",
    "ComplianceError": "compliance",
    "ComplianceWarning": "compliance",
    "run_compliance_checks": "compliance",
    "evaluate_model": "core",
    "model_info": "modelinfo",
    "robustbench_cross_check": "crosscheck",
    "evaluate_spec": "spec",
    "render_eval": "render",
}

__all__ = [
    "AA_ATTACKS",
    "COLUMNS",
    "COLUMN_TITLES",
    "CheckResult",
    "ComplianceError",
    "ComplianceWarning",
    "EvalResult",
    "EvalSpec",
    "adversarial_examples",
    "column_settings",
    "evaluate_model",
    "evaluate_spec",
    "model_info",
    "parse_attacks",
    "render_eval",
    "robustbench_cross_check",
    "run_compliance_checks",
]

if TYPE_CHECKING:
    from .columns import adversarial_examples, column_settings, parse_attacks
    from .compliance import (
        CheckResult,
        ComplianceError,
        ComplianceWarning,
        run_compliance_checks,
    )
    from .core import evaluate_model
    from .crosscheck import robustbench_cross_check
    from .modelinfo import model_info
    from .render import render_eval
    from .result import AA_ATTACKS, COLUMN_TITLES, COLUMNS, EvalResult
    from .settings import EvalSpec
    from .spec import evaluate_spec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
