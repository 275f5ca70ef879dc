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
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..protocols import Eps
from ..protocols.eps import parse_number
from ..protocols.sections import check_radius
from .autoattack import aggregate_aa, run_aa_column
from .columns import (
    PRECISION,
    SEEDING,
    adversarial_examples,
    ball_violation,
    class_accuracies,
    column_settings,
    parse_attacks,
    predict,
)
from .compliance import (
    CHECKS,
    ComplianceWarning,
    check_eval_mode,
    is_exported_graph,
    raise_on_failures,
    run_compliance_checks,
)
from .progress import Progress
from .result import COLUMN_TITLES, EvalResult, versions
from .state import EvalState, data_digest, model_digest

__all__ = [
    "CPU_BATCH_SIZE",
    "DEFAULT_AA_BATCH_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_AUTO_BATCH_SIZE",
    "choose_batch_size",
    "evaluate_model",
    "fp32_math",
]

DEFAULT_CHUNK_SIZE = 1000
DEFAULT_AA_BATCH_SIZE = 256
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


def _check_settings(batch_size: Any, aa_batch_size: Any, norm: str, aa_version: str) -> None:
    if norm not in ("Linf", "L2"):
        raise ConfigError(f"norm must be Linf or L2, got {norm!r}")
    if aa_version not in ("standard", "plus", "rand"):
        raise ConfigError(f"aa_version must be standard, plus or rand, got {aa_version!r}")
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if isinstance(aa_batch_size, bool) or not isinstance(aa_batch_size, int) or aa_batch_size < 1:
        raise ConfigError(f"aa_batch_size must be a positive integer, got {aa_batch_size!r}")


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


def evaluate_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attacks: str | Sequence[str] = ("clean", "pgd20"),
    eps: float | str = 8 / 255,
    norm: str = "Linf",
    batch_size: int | str = "auto",
    seed: int = 0,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
    progress: bool = False,
    state_path: str | Path | None = None,
    aa_version: str = "standard",
    chunk_size: int | None = None,
    compliant: bool = False,
    console: Any = None,
    aa_batch_size: int = DEFAULT_AA_BATCH_SIZE,
) -> EvalResult:
    """Evaluate ``model`` on the points ``(x, y)`` (float [0,1] NCHW, int labels).

    Args:
        attacks: columns among ``clean, fgsm, pgd20, cw, aa`` (clean is always computed).
        eps: the threat model's radius (a float or ``"8/255"``); PGD / CW steps are ``eps/4``.
        batch_size: points per batch for clean / FGSM / PGD / CW: an int, or ``"auto"`` (256 on
            the CPU; on CUDA the largest power of two whose attack step fits in half the free
            memory, see :func:`choose_batch_size`). It does not change their numbers (random
            starts are drawn per point), only their speed.
        aa_batch_size: AutoAttack's batch size. It does change AutoAttack's number (its random
            initialisations depend on the batch composition), so it is fixed, recorded in
            ``settings["aa"]`` and part of the resume key.
        seed: seeds the random starts (per point) and AutoAttack.
        device: where to evaluate (default: ``x``'s device); the model is moved there.
        num_classes: default: the width of the logits.
        state_path: a JSON file holding per-point results, written atomically after every chunk
            of points; a rerun with the same arguments continues from it (an existing file from
            a different evaluation is an error). AutoAttack's per-point results are
            pyautoattack's own state files in ``<state_path stem>.autoattack/``.
        chunk_size: points per chunk (rounded up to whole AutoAttack batches). Default: all
            points in one chunk, or :data:`DEFAULT_CHUNK_SIZE` when ``state_path`` is given.
            Only the AutoAttack number depends on it (its random inits depend on the batch
            composition).
        compliant: raise :class:`ComplianceError` when a compliance check fails (default: a
            :class:`ComplianceWarning` and the failure recorded in ``warnings``).
    """
    eps = parse_number(eps)
    check_radius("eps", Eps(eps))
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed!r}")
    _check_settings(batch_size, aa_batch_size, norm, aa_version)
    columns = parse_attacks(attacks)
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
            return _evaluate(
                model,
                x,
                y,
                columns,
                eps=eps,
                norm=norm,
                batch_size=batch_size,
                aa_batch_size=aa_batch_size,
                seed=seed,
                num_classes=num_classes,
                progress=progress,
                state_path=state_path,
                aa_version=aa_version,
                chunk_size=chunk_size,
                compliant=compliant,
                console=console,
            )
    finally:
        for m, training in modes:
            m.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    columns: tuple[str, ...],
    *,
    eps: float,
    norm: str,
    batch_size: int | str,
    aa_batch_size: int,
    seed: int,
    num_classes: int | None,
    progress: bool,
    state_path: str | Path | None,
    aa_version: str,
    chunk_size: int | None,
    compliant: bool,
    console: Any,
) -> EvalResult:
    """The body of :func:`evaluate_model`, inside its fp32 context and state restoration."""
    n = len(x)
    warn_list: list[str] = []
    # eval mode is checked on the model as given; everything else on the eval-mode model
    checks = [check_eval_mode(model)]
    _set_eval(model)
    checks += run_compliance_checks(model, x, y, checks=[c for c in CHECKS if c != "eval_mode"])
    if compliant:
        raise_on_failures(checks)
    for r in checks:
        if not r.passed:
            text = f"compliance: {r.name}: {r.message}"
            if r.name == "eval_mode":
                text += " (switched to eval mode for the evaluation)"
            warn_list.append(text)
            warnings.warn(text, ComplianceWarning, stacklevel=3)  # the caller's line

    with torch.no_grad():
        width = model(x[:1]).shape[1]
    num_classes = int(num_classes) if num_classes is not None else int(width)

    batch_size = choose_batch_size(model, x, batch_size)
    stateful = state_path is not None
    chunk = _resolve_chunk(n, aa_batch_size, chunk_size, stateful)
    # what the per-point results depend on (not batch_size: random starts are per point)
    key_fields: dict[str, Any] = {
        "n": n,
        "eps": eps,
        "norm": norm,
        "seed": seed,
        "seeding": SEEDING,
        "aa_batch_size": aa_batch_size,
        "chunk_size": chunk,
        "aa_version": aa_version,
    }
    if stateful:
        key_fields["model_sha256"] = model_digest(model)
        key_fields["data_sha256"] = data_digest(x, y)
    state = EvalState(Path(state_path) if stateful else None, key_fields)

    settings = {
        c: column_settings(
            c,
            eps=eps,
            norm=norm,
            seed=seed,
            batch_size=aa_batch_size,
            chunk_size=chunk,
            aa_version=aa_version,
        )
        for c in columns
    }
    for c in columns:
        settings[c]["precision"] = PRECISION
    flags: dict[str, Tensor] = {}
    with Progress(progress, console) as bar:
        for column in columns:
            entry = state.column(column, settings[column])
            if column == "aa":
                flags[column] = run_aa_column(
                    model,
                    x,
                    y,
                    entry,
                    state.save,
                    bar,
                    eps=eps,
                    norm=norm,
                    seed=seed,
                    batch_size=aa_batch_size,
                    version=aa_version,
                    chunk=chunk,
                    state_dir=state.aa_dir,
                )
            else:
                flags[column] = _run_column(
                    column,
                    model,
                    x,
                    y,
                    entry,
                    state,
                    bar,
                    clean=flags.get("clean"),
                    eps=eps,
                    norm=norm,
                    seed=seed,
                    batch_size=batch_size,
                    chunk=chunk,
                )
            warn_list.extend(w for w in entry["warnings"] if w not in warn_list)

    accuracy, per_class, worst, timing, pps = {}, {}, {}, {}, {}
    for column in columns:
        accuracy[column] = int(flags[column].sum()) / n
        per_class[column], worst[column] = class_accuracies(flags[column], y, num_classes)
        t = float(state.data["columns"][column]["time_s"])
        timing[column] = t
        pps[column] = n / t if t > 0 else 0.0

    aa_breakdown: dict[str, float] = {}
    if "aa" in columns:
        aa_breakdown, aa_extra, aa_warn = aggregate_aa(state.data["columns"]["aa"]["chunks"], n)
        settings["aa"].update(aa_extra)
        warn_list.extend(w for w in aa_warn if w not in warn_list)

    return EvalResult(
        accuracy=accuracy,
        per_class=per_class,
        worst_class=worst,
        settings=settings,
        n_examples=n,
        eps=eps,
        norm=norm,
        seed=seed,
        batch_size=batch_size,
        num_classes=num_classes,
        timing_s=timing,
        points_per_s=pps,
        aa_breakdown=aa_breakdown,
        warnings=warn_list,
        compliance={r.name: {"passed": r.passed, "message": r.message} for r in checks},
        versions=versions(),
        resumed=state.resumed,
    )


def _run_column(
    column: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    entry: dict[str, Any],
    state: EvalState,
    bar: Progress,
    *,
    clean: Tensor | None,
    eps: float,
    norm: str,
    seed: int,
    batch_size: int,
    chunk: int,
) -> Tensor:
    """Per-point correctness of clean / FGSM / PGD-20 / CW, chunk by chunk, resuming from
    ``entry`` (point-wise worst case: an attacked point also needs ``clean``)."""
    n = len(x)
    task = bar.add(COLUMN_TITLES[column], n, entry["done"])
    while entry["done"] < n:
        start = entry["done"]
        end = min(start + chunk, n)
        t0 = time.perf_counter()
        parts = []
        for b0 in range(start, end, batch_size):
            b1 = min(b0 + batch_size, end)
            xb, yb = x[b0:b1], y[b0:b1]
            if column == "clean":
                ok = predict(model, xb) == yb
            else:
                x_adv = adversarial_examples(
                    model, xb, yb, column, eps=eps, norm=norm, seed=seed, start=b0
                )
                viol = ball_violation(x_adv, xb, eps, norm)
                if viol > 1e-5:
                    entry["warnings"].append(
                        f"{column}: adversarial points leave the eps-ball or [0,1] by {viol:.3g}"
                    )
                ok = predict(model, x_adv) == yb
                if clean is not None:
                    ok = ok & clean[b0:b1].to(ok.device)
            parts.append(ok.cpu())
            bar.advance(task, b1 - b0)
        entry["correct"].extend(int(v) for v in torch.cat(parts).tolist())
        entry["done"] = end
        entry["time_s"] += time.perf_counter() - t0
        entry["chunks"].append({"start": start, "end": end})
        state.save()
    return torch.tensor(entry["correct"], dtype=torch.bool)
