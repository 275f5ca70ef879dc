"""evaluate_model: the columns over chunks of points, in fp32, with a resumable state.

One code path for ``ardbench eval`` (:func:`~ardbench.eval.spec.evaluate_spec`), the trainer's
final evaluation and notebooks. The columns are :mod:`ardbench.eval.columns` and
:mod:`ardbench.eval.autoattack`. Protocol decisions (all recorded in the result's ``settings``):

- The model is evaluated in eval mode and fp32; its train/eval flags are restored afterwards,
  and the global torch RNG state too (AutoAttack reseeds it). Attacks run with gradients
  enabled (never under ``torch.no_grad``), with respect to the input only.
- Accuracy is point-wise worst case (an attacked point counts only when it is also correct
  clean), so clean is always computed; per-class and worst-class accuracies come from the same
  per-point flags.
- Random starts are drawn per point on the CPU (:func:`~ardbench.eval.columns.per_point_start`)
  so FGSM / PGD / CW numbers do not depend on the batch size (``"auto"`` picks it per device),
  on chunking, on where a run was interrupted or on the device's random number generator.
- fp32 is strict: TF32 is off for convolutions and matmuls during the evaluation (PyTorch turns
  it on for cuDNN convolutions by default) and an enclosing autocast is disabled.
- AutoAttack runs per chunk of points with ``seed`` itself; with one chunk (the default without
  ``state_path``) it is RobustBench's call (plus pyautoattack's state file, which changes no
  number). Its per-point result depends on the batch
  composition through the random initialisations, so its batch size (``aa_batch_size``, separate
  from the other columns') and ``chunk_size`` are recorded and are part of the resume key.

Resume: ardbench's state file (``state_path``, written atomically after every chunk) holds the
per-point results of clean / FGSM / PGD-20 / CW; AutoAttack's per-point results are pyautoattack's
own state files, in the folder ``<state_path stem>.autoattack`` beside it (see
:mod:`ardbench.eval.autoattack`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..protocols.builtin_columns import PRECISION, SEEDING
from ..protocols.columns import get_column
from .columns import class_accuracies
from .compliance import (
    CHECKS,
    CheckResult,
    ComplianceWarning,
    check_eval_mode,
    is_exported_graph,
    raise_on_failures,
    run_compliance_checks,
)
from .progress import Progress
from .result import EvalResult, versions
from .runners import ColumnRun, run_column
from .settings import DEFAULT_AA_BATCH_SIZE, EvalSpec
from .state import EvalState, data_digest, model_digest

__all__ = [
    "CPU_BATCH_SIZE",
    "DEFAULT_AA_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_AUTO_BATCH_SIZE",
    "as_spec",
    "choose_batch_size",
    "evaluate_model",
    "fp32_math",
]

DEFAULT_CHUNK_SIZE = 1000
CPU_BATCH_SIZE = 256
MAX_AUTO_BATCH_SIZE = 4096


# -------------------------------------------------------------------------------- arithmetic


def _set_eval(model: nn.Module) -> None:
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):
        # torch.export graphs refuse eval(); their behaviour is fixed, only the flags remain
        for m in model.modules():
            m.training = False


def choose_batch_size(model: nn.Module, x: Tensor, requested: int | str = "auto") -> int:
    """The clean / FGSM / PGD / CW batch size: ``requested`` if an int; for ``"auto"``, 256 off
    CUDA, and on CUDA the largest power of two (32 .. 4096, at most ``len(x)`` rounded up) whose
    attack step fits in half the free memory, from the memory one forward + input-gradient
    backward takes on a probe batch of 32 (half: room for cuDNN workspaces, fragmentation
    and the caller's tensors)."""
    if requested != "auto":
        return int(requested)
    if x.device.type != "cuda":
        return CPU_BATCH_SIZE
    dev = x.device
    probe = min(len(x), 32)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    xa = x[:probe].detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xa).float().logsumexp(1).sum(), xa)
    del grad, xa
    torch.cuda.synchronize(dev)
    per_point = max((torch.cuda.max_memory_allocated(dev) - base) / probe, 1.0)
    free, _ = torch.cuda.mem_get_info(dev)
    fit = max(int(0.5 * free / per_point), 1)
    size = 1 << (fit.bit_length() - 1)
    cap = 1 << max(len(x) - 1, 0).bit_length()
    return max(32, min(size, MAX_AUTO_BATCH_SIZE, cap))


@contextlib.contextmanager
def fp32_math(device: torch.device) -> Iterator[None]:
    """fp32 arithmetic for the evaluation: TF32 off for cuDNN convolutions (PyTorch turns it on
    by default) and for matmuls, and no autocast from an enclosing context; restored after."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _resolve_chunk(n: int, aa_batch_size: int, chunk_size: int | None, stateful: bool) -> int:
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE if stateful else n
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    # whole AutoAttack batches per chunk: its clean pass is then batched as in one call (its
    # attacks batch the points still robust within a chunk, which is why the chunk size is
    # recorded and keys the state; the other columns are per point and never depend on it)
    chunk_size = -(-chunk_size // aa_batch_size) * aa_batch_size
    return n if chunk_size >= n else chunk_size


# ------------------------------------------------------------------------------- evaluation


def _check_points(x: Any, y: Any) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 4:
        raise TypeError(
            "x must be a float tensor of shape (N, C, H, W) in [0, 1]; "
            f"got {getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))} "
            "(uint8 images: use Dataset.test_subset or x.float() / 255)"
        )
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        raise ConfigError(f"x looks like NHWC {tuple(x.shape)}; pass NCHW (x.permute(0, 3, 1, 2))")
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(
            f"x and y must hold the same non-zero number of points ({len(x)}, {len(y)})"
        )


def as_spec(spec: EvalSpec | None, settings: dict[str, Any]) -> EvalSpec:
    """``spec``, or one built from loose keyword settings (``attacks="clean,aa"``, ``eps=...``)."""
    if spec is None:
        return EvalSpec.create(**settings)
    if settings:
        raise ConfigError(
            f"give the evaluation settings in the EvalSpec or as keywords, not both "
            f"(got spec and {', '.join(sorted(settings))})"
        )
    return spec


def evaluate_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: EvalSpec | None = None,
    *,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    progress: bool = False,
    state_path: str | Path | None = None,
    console: Any = None,
    **settings: Any,
) -> EvalResult:
    """Evaluate ``model`` on the points ``(x, y)`` (float [0,1] NCHW, int labels).

    The evaluation's settings are an :class:`~ardbench.eval.settings.EvalSpec` (``spec``) or
    its fields as keywords:

    - ``attacks``: registered columns (built-ins: ``clean, fgsm, pgd20, cw, aa``); clean is
      always computed.
    - ``eps``: the threat model's radius (a float or ``"8/255"``); PGD / CW steps are ``eps/4``.
    - ``batch_size``: points per batch for the per-point columns: an int, or ``"auto"`` (256 on
      the CPU; on CUDA the largest power of two whose attack step fits in half the free
      memory, see :func:`choose_batch_size`). It does not change their numbers (random starts
      are drawn per point), only their speed.
    - ``aa_batch_size``: AutoAttack's batch size. It does change AutoAttack's number (its
      random initialisations depend on the batch composition), so it is fixed, recorded in
      ``settings["aa"]`` and part of the resume key.
    - ``seed``: seeds the random starts (per point) and AutoAttack.
    - ``chunk_size``: points per chunk (rounded up to whole AutoAttack batches). Default: all
      points in one chunk, or :data:`DEFAULT_CHUNK_SIZE` when ``state_path`` is given. Only
      the AutoAttack number depends on it.
    - ``compliant``: raise :class:`ComplianceError` when a compliance check fails (default: a
      :class:`ComplianceWarning` and the failure recorded in ``warnings``).

    Args:
        device: where to evaluate (default: ``x``'s device); the model is moved there.
        num_classes: default: the width of the logits.
        state_path: a JSON file holding per-point results, written atomically after every chunk
            of points; a rerun with the same arguments continues from it (an existing file from
            a different evaluation is an error). AutoAttack's per-point results are
            pyautoattack's own state files in ``<state_path stem>.autoattack/``.
    """
    spec = as_spec(spec, settings)
    _check_points(x, y)
    dev = torch.device(device) if device is not None else x.device
    x = x.detach().to(dev, torch.float32).contiguous()
    y = y.detach().to(dev, torch.int64)
    if device is not None and not is_exported_graph(model):
        model.to(dev)

    modes = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        with fp32_math(dev):
            path = Path(state_path) if state_path is not None else None
            return _evaluate(model, x, y, spec, num_classes, path, Progress(progress, console))
    finally:
        for m, training in modes:
            m.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _compliance(
    model: nn.Module, x: Tensor, y: Tensor, compliant: bool
) -> tuple[list[CheckResult], list[str]]:
    """The compliance checks and the warnings of the failed ones; the model is left in eval
    mode (eval mode is checked on the model as given, everything else after switching)."""
    checks = [check_eval_mode(model)]
    _set_eval(model)
    checks += run_compliance_checks(model, x, y, checks=[c for c in CHECKS if c != "eval_mode"])
    if compliant:
        raise_on_failures(checks)
    warn_list = []
    for r in checks:
        if not r.passed:
            text = f"compliance: {r.name}: {r.message}"
            if r.name == "eval_mode":
                text += " (switched to eval mode for the evaluation)"
            warn_list.append(text)
            warnings.warn(text, ComplianceWarning, stacklevel=4)  # the caller's line
    return checks, warn_list


def _open_state(
    model: nn.Module, x: Tensor, y: Tensor, spec: EvalSpec, path: Path | None, chunk: int
) -> EvalState:
    """The resumable state, keyed by what the per-point results depend on (not the batch size
    of the per-point columns: their random starts are per point)."""
    key_fields: dict[str, Any] = {
        "n": len(x),
        "eps": spec.eps,
        "norm": spec.norm,
        "seed": spec.seed,
        "seeding": SEEDING,
        "aa_batch_size": spec.aa_batch_size,
        "chunk_size": chunk,
        "aa_version": spec.aa_version,
    }
    if path is not None:
        key_fields["model_sha256"] = model_digest(model)
        key_fields["data_sha256"] = data_digest(x, y)
    return EvalState(path, key_fields)


def _evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: EvalSpec,
    num_classes: int | None,
    state_path: Path | None,
    progress: Progress,
) -> EvalResult:
    """The body of :func:`evaluate_model`, inside its fp32 context and state restoration."""
    n = len(x)
    checks, warn_list = _compliance(model, x, y, spec.compliant)
    with torch.no_grad():
        width = model(x[:1]).shape[1]
    classes = int(num_classes) if num_classes is not None else int(width)
    batch_size = choose_batch_size(model, x, spec.batch_size)
    chunk = _resolve_chunk(n, spec.aa_batch_size, spec.chunk_size, state_path is not None)
    state = _open_state(model, x, y, spec, state_path, chunk)
    ctx = spec.settings_context(chunk)
    runs: dict[str, ColumnRun] = {}
    flags: dict[str, Tensor] = {}
    with progress as bar:
        for key in spec.attacks:
            column = get_column(key)
            settings = {**column.settings(ctx), "precision": PRECISION}
            run = ColumnRun(
                column, model, x, y, spec, state.column(key, settings), state, bar,
                batch_size, chunk, settings, clean=flags.get("clean"),
            )  # fmt: skip
            flags[key] = run_column(run)
            runs[key] = run
            warn_list.extend(w for w in run.entry["warnings"] if w not in warn_list)
    for run in runs.values():
        warn_list.extend(w for w in run.warnings if w not in warn_list)
    return _result(spec, runs, flags, state, y, classes, batch_size, checks, warn_list)


def _result(
    spec: EvalSpec,
    runs: dict[str, ColumnRun],
    flags: dict[str, Tensor],
    state: EvalState,
    y: Tensor,
    num_classes: int,
    batch_size: int,
    checks: list[CheckResult],
    warn_list: list[str],
) -> EvalResult:
    """The per-point flags summed up: accuracy, per-class and worst-class, timings."""
    n = len(y)
    accuracy, per_class, worst, timing, pps = {}, {}, {}, {}, {}
    for column in runs:
        accuracy[column] = int(flags[column].sum()) / n
        per_class[column], worst[column] = class_accuracies(flags[column], y, num_classes)
        t = float(state.data["columns"][column]["time_s"])
        timing[column] = t
        pps[column] = n / t if t > 0 else 0.0
    breakdown = {k: v for run in runs.values() for k, v in run.breakdown.items()}
    return EvalResult(
        accuracy=accuracy,
        per_class=per_class,
        worst_class=worst,
        settings={k: run.settings for k, run in runs.items()},
        n_examples=n,
        eps=spec.eps,
        norm=spec.norm,
        seed=spec.seed,
        batch_size=batch_size,
        num_classes=num_classes,
        timing_s=timing,
        points_per_s=pps,
        aa_breakdown=breakdown,
        warnings=warn_list,
        compliance={r.name: {"passed": r.passed, "message": r.message} for r in checks},
        versions=versions(),
        resumed=state.resumed,
    )
