"""RobustBench-style compliance checks, run by the evaluator before any attack.

Each check answers one question about the model under evaluation; a failed check means the
robust accuracy that follows is probably not meaningful:

- ``eval_mode``: the model and every submodule have ``training == False`` (a dropout layer
  left in train mode makes the forward random; a BatchNorm in train mode uses batch statistics,
  so a point's prediction depends on the rest of its batch). A ``torch.export`` graph has its
  behaviour fixed at export time: its flags mean nothing, so its graph is scanned for
  training-mode dropout / batch-norm operators instead.
- ``fp32``: floating parameters and buffers, and the logits, are float32 (the protocol
  evaluates in fp32).
- ``input_range``: the inputs are in [0, 1] (normalisation, when any, belongs inside the model).
- ``logits``: the output is not a probability vector (rows in [0, 1] that sum to 1): attacks
  on the cross-entropy of probabilities are weak, so a softmax output overstates robustness.
- ``deterministic``: two forward passes on the same inputs agree (a randomised defence needs
  EOT attacks, AutoAttack's ``rand`` version, not ``standard``).
- ``gradients``: every point has a finite, non-zero input gradient of the logit margin
  ``z_y - max_{j != y} z_j`` (a rounding / quantisation layer, a ``.detach()`` in the forward or
  a saturating non-linearity hides the gradient from gradient-based attacks). The margin is used
  rather than the cross-entropy because CE's gradient underflows to zero on confidently correct
  points of an honest model; the CE gradient is still checked for NaN / inf.

The checks never change the model's train/eval flags; they run on at most ``max_points`` points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CHECKS",
    "CheckResult",
    "ComplianceError",
    "ComplianceWarning",
    "check_deterministic",
    "check_eval_mode",
    "check_fp32",
    "check_gradients",
    "check_input_range",
    "check_logits",
    "is_exported_graph",
    "raise_on_failures",
    "run_compliance_checks",
]

CHECKS = ("eval_mode", "fp32", "input_range", "logits", "deterministic", "gradients")

# AutoAttack's check_randomized uses 1e-4 on L2-normalised logits; the same scale here.
_DETERMINISM_TOL = 1e-4
_PROB_TOL = 1e-5


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``passed`` and a message saying what was seen."""

    name: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ComplianceError(RuntimeError):
    """A compliance check failed while ``compliant=True`` (``--compliant``); names the check."""

    def __init__(self, failed: Sequence[CheckResult]) -> None:
        self.failed = list(failed)
        names = ", ".join(r.name for r in self.failed)
        lines = "; ".join(f"{r.name}: {r.message}" for r in self.failed)
        super().__init__(
            f"compliance check(s) failed: {names} — {lines}. The evaluation was stopped "
            "(--compliant); fix the model or drop --compliant to evaluate with a warning."
        )


class ComplianceWarning(UserWarning):
    """A compliance check failed and ``compliant`` was False: the evaluation went on."""


def is_exported_graph(model: nn.Module) -> bool:
    """True for the module of a ``torch.export`` program (train/eval fixed at export time)."""
    return isinstance(model, torch.fx.GraphModule) and any(
        c.__name__ == "_StatefulGraphModule" for c in type(model).__mro__
    )


def _graph_training_ops(model: nn.Module) -> list[str]:
    found = []
    for gm in model.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            target = str(node.target)
            if "dropout" in target or "bernoulli" in target:
                found.append(target)
            elif "native_batch_norm_legit" in target and "no_training" not in target:
                found.append(target)
            elif target.endswith("batch_norm.default") and len(node.args) > 5 and node.args[5]:
                found.append(target)
    return sorted(set(found))


def check_eval_mode(model: nn.Module) -> CheckResult:
    if is_exported_graph(model):
        ops = _graph_training_ops(model)
        if ops:
            return CheckResult(
                "eval_mode",
                False,
                f"the exported graph contains training-mode operators: {', '.join(ops)}",
                {"ops": ops},
            )
        return CheckResult(
            "eval_mode",
            True,
            "torch.export graph with no dropout / training batch-norm operators "
            "(its train/eval flags are fixed at export time)",
        )
    in_train = [name or "<root>" for name, m in model.named_modules() if m.training]
    if in_train:
        shown = ", ".join(
            f"{n} ({type(model.get_submodule(n) if n != '<root>' else model).__name__})"
            for n in in_train[:8]
        )
        more = f" and {len(in_train) - 8} more" if len(in_train) > 8 else ""
        return CheckResult(
            "eval_mode",
            False,
            f"{len(in_train)} module(s) in train mode: {shown}{more}",
            {"modules": in_train},
        )
    return CheckResult("eval_mode", True, "model and all submodules in eval mode")


def check_fp32(model: nn.Module, logits: Tensor | None = None) -> CheckResult:
    bad = sorted(
        {
            f"{name}: {t.dtype}"
            for name, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_floating_point() and t.dtype != torch.float32
        }
    )
    if logits is not None and logits.dtype != torch.float32:
        bad.append(f"logits: {logits.dtype}")
    if bad:
        return CheckResult(
            "fp32",
            False,
            f"not float32: {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}",
            {"tensors": bad},
        )
    return CheckResult("fp32", True, "parameters, buffers and logits are float32")


def check_input_range(x: Tensor) -> CheckResult:
    lo, hi = float(x.min()), float(x.max())
    if not (x.is_floating_point() and lo >= 0.0 and hi <= 1.0):
        return CheckResult(
            "input_range",
            False,
            f"inputs span [{lo:.4g}, {hi:.4g}] ({x.dtype}); expected float in [0, 1] "
            "(normalisation belongs inside the model)",
            {"min": lo, "max": hi},
        )
    return CheckResult("input_range", True, f"inputs in [{lo:.3g}, {hi:.3g}]")


def check_logits(logits: Tensor) -> CheckResult:
    in_unit = bool((logits >= -_PROB_TOL).all() and (logits <= 1 + _PROB_TOL).all())
    sums_to_one = bool(((logits.sum(1) - 1).abs() < _PROB_TOL).all())
    if in_unit and sums_to_one:
        return CheckResult(
            "logits",
            False,
            "the output looks like probabilities (every row in [0,1] and summing to 1); "
            "return the logits (drop the final softmax)",
        )
    return CheckResult("logits", True, "outputs are not probability vectors")


def check_deterministic(model: nn.Module, x: Tensor) -> CheckResult:
    with torch.no_grad():
        a, b = model(x), model(x)
    na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
    nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
    diff = float((na - nb).norm(dim=1).max())
    pred_diff = int((a.argmax(1) != b.argmax(1)).sum())
    if not diff <= _DETERMINISM_TOL or pred_diff:  # also catches NaN
        return CheckResult(
            "deterministic",
            False,
            f"two forward passes differ (normalised logit difference {diff:.3g}, "
            f"{pred_diff} prediction(s) changed): a randomised forward needs an EOT / "
            "AutoAttack 'rand' evaluation",
            {"max_normalised_diff": diff, "predictions_changed": pred_diff},
        )
    return CheckResult("deterministic", True, f"two passes agree (max diff {diff:.2g})")


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    correct = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(
        torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")
    ).amax(1)
    return correct - other


def check_gradients(model: nn.Module, x: Tensor, y: Tensor) -> CheckResult:
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xr)
        if not logits.requires_grad:
            return CheckResult(
                "gradients",
                False,
                "the logits do not depend differentiably on the input (the forward detaches "
                "or quantises it): gradient masking",
                {"zero": len(x), "nonfinite": 0},
            )
        margin_grad, ce_grad = (
            torch.autograd.grad(v, xr, retain_graph=True, allow_unused=True)[0]
            for v in (
                _margin(logits, y).sum(),
                torch.nn.functional.cross_entropy(logits, y, reduction="sum"),
            )
        )
    n = len(x)
    if margin_grad is None:
        margin_grad = torch.zeros_like(xr)
    if ce_grad is None:
        ce_grad = torch.zeros_like(xr)
    g = margin_grad.flatten(1)
    zero = int((g.abs().sum(1) == 0).sum())
    nonfinite = int((~torch.isfinite(g).all(1) | ~torch.isfinite(ce_grad.flatten(1)).all(1)).sum())
    if zero or nonfinite:
        return CheckResult(
            "gradients",
            False,
            f"{zero} of {n} points have an all-zero input gradient and {nonfinite} a non-finite "
            "one: gradient masking (rounding, detach, saturation) makes gradient attacks fail",
            {"zero": zero, "nonfinite": nonfinite, "n": n},
        )
    return CheckResult("gradients", True, f"all {n} points have finite, non-zero input gradients")


def run_compliance_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    checks: Sequence[str] = CHECKS,
    max_points: int = 128,
) -> list[CheckResult]:
    """Run ``checks`` (all by default) on the model as it is and the first ``max_points`` points.

    Nothing is changed on the model; a check that crashes is reported as failed with the error.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown compliance check(s) {unknown}; known: {', '.join(CHECKS)}")
    xs, ys = x[:max_points], y[:max_points]
    results: list[CheckResult] = []
    logits: Tensor | None = None
    if any(c in checks for c in ("fp32", "logits")):
        with torch.no_grad():
            logits = model(xs)
    for name in CHECKS:
        if name not in checks:
            continue
        try:
            if name == "eval_mode":
                results.append(check_eval_mode(model))
            elif name == "fp32":
                results.append(check_fp32(model, logits))
            elif name == "input_range":
                results.append(check_input_range(x))  # every point: cheap
            elif name == "logits":
                assert logits is not None
                results.append(check_logits(logits))
            elif name == "deterministic":
                results.append(check_deterministic(model, xs))
            else:
                results.append(check_gradients(model, xs, ys))
        except Exception as exc:  # a check that cannot run is a finding, not a crash
            results.append(
                CheckResult(name, False, f"the check raised {type(exc).__name__}: {exc}")
            )
    return results


def raise_on_failures(results: Sequence[CheckResult]) -> None:
    """Raise :class:`ComplianceError` naming every failed check, if any."""
    failed = [r for r in results if not r.passed]
    if failed:
        raise ComplianceError(failed)
