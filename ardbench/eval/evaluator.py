"""The evaluator: clean, FGSM, PGD-20, CW-inf and AutoAttack columns, compliance checks, resume.

One code path for ``ardbench eval`` (:func:`evaluate_spec`), the trainer's final evaluation and
notebooks (:func:`evaluate_model`). The columns follow ``../shared/reference/methods.md`` §4:

========  =====================================================================================
clean     top-1 accuracy
fgsm      x' = clamp(x + eps * sign grad CE, 0, 1); no random start (step = eps)
pgd20     20 steps of step eps/4 (2/255 at 8/255), uniform start clamped to [0,1], CE, 1 restart
cw        30 steps of step eps/4, uniform start clamped, CW-inf margin (kappa = 50, over the C
          logits: IAD's ``attack_generator``), 1 restart
aa        AutoAttack ``standard`` (APGD-CE, APGD-T 9 targets, FAB-T 9 targets, Square 5000
          queries) from the PyPI package ``pyautoattack`` (= fra31/auto-attack@a392200)
========  =====================================================================================

Protocol decisions (all recorded in the result's ``settings``):

- The model is evaluated in eval mode and fp32; its train/eval flags are restored afterwards,
  and the global torch RNG state too (AutoAttack reseeds it). Attacks run with gradients
  enabled (never under ``torch.no_grad``), with respect to the input only.
- Accuracy is point-wise worst case, as RobustBench counts AutoAttack: a point counts as robust
  in an attacked column only when it is classified correctly both clean and at the adversarial
  point (so every attacked column is <= clean). Clean is always computed for that reason.
- Random starts are drawn per point on the CPU (in fixed blocks of 64 points seeded from
  ``(seed, column, index // 64)``, sliced to each batch),
  so FGSM / PGD / CW numbers do not depend on the batch size (``"auto"`` picks it per device),
  on chunking, on where a run was interrupted or on the device's random number generator.
- fp32 is strict: TF32 is off for convolutions and matmuls during the evaluation (PyTorch turns
  it on for cuDNN convolutions by default) and an enclosing autocast is disabled.
- AutoAttack runs per chunk of points with ``seed`` itself (it reseeds every attack call
  anyway); with one chunk (the default without ``state_path``) the call is exactly
  ``AutoAttack(model, norm=, eps=, version="standard", seed=seed).run_standard_evaluation(x, y,
  batch_size=batch_size)``. Its per-point result depends on the batch composition through the
  random initialisations, so its batch size (``aa_batch_size``, separate from the other
  columns') and ``chunk_size`` are recorded and are part of the resume key.
- AutoAttack's per-attack breakdown is read from its own per-batch log lines ("<attack> - b/nb -
  k out of m successfully perturbed"), cross-validated against the final per-point flags; its
  warnings (the checks of ``checks_doc``: randomised defence, probability output, zero
  gradients, Square succeeding where gradient attacks did not...) are captured into
  ``EvalResult.warnings`` and make ``model_info["unreliable"]`` true.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..attacks import ce_objective, cw_objective, fgsm, pgd, random_start
from ..device import check_device
from ..errors import ConfigError
from ..io import write_json_atomic
from ..protocols import Eps, format_eps, parse_number
from ..protocols.sections import check_radius
from .compliance import (
    CHECKS,
    CheckResult,
    ComplianceError,
    check_eval_mode,
    is_exported_graph,
    raise_on_failures,
    run_compliance_checks,
)

__all__ = [
    "AA_ATTACKS",
    "COLUMNS",
    "DEFAULT_CHUNK_SIZE",
    "CheckResult",
    "ComplianceError",
    "ComplianceWarning",
    "EvalResult",
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

logger = logging.getLogger(__name__)

COLUMNS = ("clean", "fgsm", "pgd20", "cw", "aa")
AA_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_AA_BATCH_SIZE = 256
# How the PGD / CW random starts are drawn: per point (in fixed blocks of 64 points, whatever
# the batches), on the CPU, so the per-point results do not depend on the batch size, the
# chunking or the device's random number generator (records made before this scheme say
# "per batch from (seed, column, first index)").
START_BLOCK = 64
SEEDING = "per point: blocks of 64 points from (seed, column, index // 64), drawn on the CPU"
PRECISION = "fp32 (TF32 off for convolutions and matmuls)"

CW_KAPPA = 50.0
_STATE_FORMAT = "ardbench-eval-state-v1"
_AA_LOGGER = "auto-attack"
_AA_BATCH_RE = re.compile(
    r"^(?P<attack>[a-z-]+) - (?P<b>\d+)/(?P<nb>\d+) - (?P<k>\d+) out of (?P<m>\d+) "
    r"successfully perturbed$"
)
_COLUMN_TITLES = {"clean": "Clean", "fgsm": "FGSM", "pgd20": "PGD-20", "cw": "CW∞", "aa": "AA"}
PLACEHOLDER = "<fill in>"


class ComplianceWarning(UserWarning):
    """A compliance check failed and ``compliant`` was False: the evaluation went on."""


# ----------------------------------------------------------------------------------- result


@dataclass
class EvalResult:
    """What :func:`evaluate_model` measured. Accuracies are fractions in [0, 1]."""

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


# --------------------------------------------------------------------------------- settings


def parse_attacks(attacks: str | Sequence[str]) -> tuple[str, ...]:
    """``"clean,pgd20,aa"`` or a sequence -> the columns in canonical order (clean always first)."""
    names = [
        a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)
    ]
    names = [a for a in names if a]
    aliases = {"pgd": "pgd20", "pgd-20": "pgd20", "cw_inf": "cw", "cwinf": "cw", "autoattack": "aa"}
    names = [aliases.get(a, a) for a in names]
    unknown = [a for a in names if a not in COLUMNS]
    if unknown:
        raise ConfigError(
            f"unknown attack column(s) {', '.join(map(repr, unknown))}",
            hint=f"known: {', '.join(COLUMNS)}",
        )
    return tuple(c for c in COLUMNS if c in names or c == "clean")


def column_settings(
    column: str,
    *,
    eps: float,
    norm: str = "Linf",
    seed: int = 0,
    batch_size: int = 256,
    chunk_size: int | None = None,
    aa_version: str = "standard",
) -> dict[str, Any]:
    """The attack settings of one column, as recorded in the result (step scales with eps)."""
    pointwise = "robust = correct on the clean point and on the adversarial point"
    if column == "clean":
        return {"attack": "none"}
    if column == "fgsm":
        return {
            "attack": "fgsm",
            "loss": "ce",
            "steps": 1,
            "step": eps,
            "step_rule": "eps",
            "random_start": "none",
            "restarts": 1,
            "norm": norm,
            "counts": pointwise,
        }
    if column in ("pgd20", "cw"):
        s: dict[str, Any] = {
            "attack": "pgd",
            "loss": "ce" if column == "pgd20" else "cw_margin",
            "steps": 20 if column == "pgd20" else 30,
            "step": eps / 4,
            "step_rule": "eps/4",
            "random_start": "uniform",
            "clamp_start": True,
            "restarts": 1,
            "norm": norm,
            "seeding": SEEDING,
            "counts": pointwise,
        }
        if column == "cw":
            s["kappa"] = CW_KAPPA
            s["margin_over"] = "all C logits (IAD attack_generator)"
        return s
    if column == "aa":
        return {
            "attack": "autoattack",
            "version": aa_version,
            "package": "pyautoattack",
            "package_version": _dist_version("pyautoattack"),
            "attacks": list(AA_ATTACKS) if aa_version == "standard" else None,
            "apgd_ce": {"n_iter": 100, "restarts": 1},
            "apgd_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
            "fab_t": {"n_iter": 100, "restarts": 1, "n_target_classes": 9},
            "square": {"n_queries": 5000, "p_init": 0.8},
            "seed": seed,
            "batch_size": batch_size,
            "chunk_size": chunk_size,
            "norm": norm,
            "counts": "robust = correct clean and every attack failed (AutoAttack's own flags)",
        }
    raise ValueError(f"unknown column {column!r}")


# ---------------------------------------------------------------------------------- attacks


def _derive_seed(seed: int, column: str, block: int) -> int:
    digest = hashlib.sha256(f"ardbench-eval:{seed}:{column}:block:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def per_point_start(
    x: Tensor, eps: float, norm: str, *, seed: int, column: str, start: int
) -> Tensor:
    """The uniform random starts of points ``start .. start + len(x)``: drawn on the CPU in
    fixed blocks of :data:`START_BLOCK` points (block ``k`` = points ``64k .. 64k + 63``, its
    generator seeded from ``(seed, column, k)``) and sliced, so a point gets the same start
    whatever batch it is in and whatever the device (about 1 ms per 64 CIFAR images)."""
    if len(x) == 0:
        return torch.zeros_like(x)
    gen = torch.Generator(device="cpu")
    zero = torch.zeros((START_BLOCK, *x.shape[1:]), dtype=torch.float32)
    first, last = start // START_BLOCK, (start + len(x) - 1) // START_BLOCK
    parts = []
    for block in range(first, last + 1):
        gen.manual_seed(_derive_seed(seed, column, block))
        parts.append(random_start(zero, eps, "uniform", norm, gen))
    offset = start - first * START_BLOCK
    return torch.cat(parts)[offset : offset + len(x)].to(x.device, x.dtype)


def adversarial_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    column: str,
    *,
    eps: float,
    norm: str = "Linf",
    seed: int = 0,
    start: int = 0,
) -> Tensor:
    """x_adv of one batch for ``fgsm`` / ``pgd20`` / ``cw`` (``start``: index of its first point).

    Detached, inside the eps-ball around ``x`` and in [0, 1]. The evaluator calls this per batch.
    """
    if column == "fgsm":
        if norm == "Linf":
            return fgsm(x, ce_objective(model, y), eps)
        return pgd(
            x,
            ce_objective(model, y),
            eps=eps,
            step=eps,
            steps=1,
            random_start_kind="none",
            norm=norm,
        )
    if column in ("pgd20", "cw"):
        s = column_settings(column, eps=eps, norm=norm)
        objective = (
            ce_objective(model, y) if column == "pgd20" else cw_objective(model, y, CW_KAPPA)
        )
        return pgd(
            x,
            objective,
            eps=eps,
            step=s["step"],
            steps=s["steps"],
            clamp_start=True,
            norm=norm,
            delta0=per_point_start(x, eps, norm, seed=seed, column=column, start=start),
        )
    raise ValueError(f"adversarial_examples: {column!r} is not fgsm, pgd20 or cw")


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _ball_violation(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> float:
    """How far x_adv leaves the eps-ball or [0,1] (0 when it does not)."""
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    over = float((size - eps).clamp_min(0).max()) if len(d) else 0.0
    out = float(torch.maximum(-x_adv, x_adv - 1).clamp_min(0).max()) if len(d) else 0.0
    return max(over, out)


class _AALogCapture(logging.Handler):
    """Collects AutoAttack's log records (its breakdown lines and its warnings) during a call."""

    def __init__(self, on_record: Callable[[str], None] | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []
        self.times: list[float] = []
        self.warnings: list[str] = []
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.messages.append(msg)
        self.times.append(record.created)
        if record.levelno >= logging.WARNING:
            self.warnings.append(msg)
        logger.debug("autoattack: %s", msg)
        if self.on_record is not None:
            self.on_record(msg)

    @contextlib.contextmanager
    def attached(self) -> Iterator[_AALogCapture]:
        aa_logger = logging.getLogger(_AA_LOGGER)
        level, propagate = aa_logger.level, aa_logger.propagate
        # DEBUG is needed for the per-batch lines; not propagating keeps them off the console
        aa_logger.setLevel(logging.DEBUG)
        aa_logger.propagate = False
        aa_logger.addHandler(self)
        try:
            yield self
        finally:
            aa_logger.removeHandler(self)
            aa_logger.setLevel(level)
            aa_logger.propagate = propagate

    def breakdown(self, attacks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Per attack: points attacked, points broken, and seconds (from "running <attack>" to
        "robust accuracy after <ATTACK>")."""
        out: dict[str, dict[str, Any]] = {
            a: {"attacked": 0, "broken": 0, "seconds": 0.0} for a in attacks
        }
        started: dict[str, float] = {}
        for msg, t in zip(self.messages, self.times, strict=True):
            if msg.startswith("running "):
                started[msg[len("running ") :].strip()] = t
                continue
            if msg.startswith("robust accuracy after "):
                name = msg[len("robust accuracy after ") :].split(":")[0].strip().lower()
                if name in started and name in out:
                    out[name]["seconds"] += t - started.pop(name)
                continue
            m = _AA_BATCH_RE.match(msg)
            if m is None:
                continue
            entry = out.setdefault(m["attack"], {"attacked": 0, "broken": 0, "seconds": 0.0})
            entry["attacked"] += int(m["m"])
            entry["broken"] += int(m["k"])
        return out


def _run_aa(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str,
    seed: int,
    batch_size: int,
    version: str,
    on_log: Callable[[str], None] | None = None,
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """One AutoAttack call on (x, y): per-point robust flags, x_adv, and the chunk's breakdown."""
    from .._compat import import_autoattack

    aa_pkg = import_autoattack()
    x = x.detach().to(torch.float32).contiguous()  # APGD-T's checks .view() the gradients
    capture = _AALogCapture(on_log)
    with capture.attached():
        adversary = aa_pkg.AutoAttack(
            model, norm=norm, eps=eps, version=version, seed=seed, device=x.device
        )
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    robust = (y_adv.to(y.device) == y).cpu()
    attacks = list(adversary.attacks_to_run)
    parsed = capture.breakdown(attacks)
    clean_correct = int((_batched_predict(model, x, batch_size) == y).sum())
    broken_total = sum(v["broken"] for v in parsed.values())
    info: dict[str, Any] = {
        "clean": clean_correct,
        "attacks": attacks,
        "per_attack": parsed,
        "robust": int(robust.sum()),
        "warnings": list(dict.fromkeys(capture.warnings)),
        "breakdown_consistent": clean_correct - broken_total == int(robust.sum()),
        "ball_violation": _ball_violation(x_adv.to(x.device), x, eps, norm),
    }
    return robust, x_adv, info


def _batched_predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return torch.cat([_predict(model, x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------------------------ state


def _tensor_digest(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _model_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, Tensor):
            _tensor_digest(h, t)
    return h.hexdigest()


def _data_digest(x: Tensor, y: Tensor) -> str:
    h = hashlib.sha256()
    _tensor_digest(h, x)
    _tensor_digest(h, y)
    return h.hexdigest()


class _State:
    """Per-point results saved atomically after every chunk, keyed by what defines them."""

    def __init__(self, path: Path | None, key_fields: dict[str, Any]) -> None:
        self.path = path
        blob = json.dumps(key_fields, sort_keys=True).encode()
        self.key = hashlib.sha256(blob).hexdigest()
        self.data: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "key": self.key,
            "key_fields": key_fields,
            "columns": {},
        }
        self.resumed = False
        if path is not None and path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                old = None
            if not isinstance(old, dict) or not isinstance(old.get("columns"), dict):
                raise ConfigError(
                    f"evaluation state {path} is not a state file (corrupt or edited)",
                    hint="delete it to start this evaluation over",
                )
            if old.get("format") != _STATE_FORMAT or old.get("key") != self.key:
                diff = {
                    k: (old.get("key_fields", {}).get(k), v)
                    for k, v in key_fields.items()
                    if old.get("key_fields", {}).get(k) != v
                }
                raise ConfigError(
                    f"evaluation state {path} belongs to a different evaluation "
                    f"(differs in {sorted(diff) or 'format'}); delete it or use another state path"
                )
            self.data = old
            self.resumed = True

    def column(self, name: str, settings: dict[str, Any]) -> dict[str, Any]:
        settings = json.loads(json.dumps(settings))
        entry = self.data["columns"].get(name)
        if entry is None or entry.get("settings") != settings:
            entry = {
                "settings": settings,
                "done": 0,
                "correct": [],
                "time_s": 0.0,
                "chunks": [],
                "warnings": [],
            }
            self.data["columns"][name] = entry
        return entry

    def save(self) -> None:
        if self.path is not None:
            write_json_atomic(self.path, self.data)


# --------------------------------------------------------------------------------- progress


class _Progress:
    def __init__(self, enabled: bool, console: Any = None) -> None:
        self._progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, description: str, total: int, completed: int) -> Any:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=completed)

    def advance(self, task: Any, n: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, n)

    def describe(self, task: Any, description: str) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, description=description)


# ------------------------------------------------------------------------------- evaluation


def _dist_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    import numpy

    return {
        "ardbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pyautoattack": _dist_version("pyautoattack"),
        "robustbench": _dist_version("robustbench"),
    }


def _set_eval(model: nn.Module) -> None:
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):
        # torch.export graphs refuse eval(); their behaviour is fixed, only the flags remain
        for m in model.modules():
            m.training = False


CPU_BATCH_SIZE = 256
MAX_AUTO_BATCH_SIZE = 4096


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
    # whole AutoAttack batches per chunk: AutoAttack's result then does not depend on the
    # chunking (the other columns' random starts are per point and never do)
    chunk_size = -(-chunk_size // aa_batch_size) * aa_batch_size
    return n if chunk_size >= n else chunk_size


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
            a different evaluation is an error).
        chunk_size: points per chunk (rounded up to whole AutoAttack batches). Default: all
            points in one chunk, or :data:`DEFAULT_CHUNK_SIZE` when ``state_path`` is given.
            Only the AutoAttack number depends on it (its random inits depend on the batch
            composition).
        compliant: raise :class:`ComplianceError` when a compliance check fails (default: a
            :class:`ComplianceWarning` and the failure recorded in ``warnings``).
    """
    eps = parse_number(eps)
    check_radius("eps", Eps(eps))
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
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed!r}")
    columns = parse_attacks(attacks)
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
    dev = torch.device(device) if device is not None else x.device
    x = x.detach().to(dev, torch.float32).contiguous()
    y = y.detach().to(dev, torch.int64)
    if device is not None and not is_exported_graph(model):
        model.to(dev)

    modes = [(m, m.training) for m in model.modules()]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    warn_list: list[str] = []
    try:
        with fp32_math(dev):
            return _evaluate(
                model,
                x,
                y,
                columns,
                warn_list,
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
    warn_list: list[str],
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
        key_fields["model_sha256"] = _model_digest(model)
        key_fields["data_sha256"] = _data_digest(x, y)
    state = _State(Path(state_path) if stateful else None, key_fields)

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
    with _Progress(progress, console) as bar:
        for column in columns:
            entry = state.column(column, settings[column])
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
                aa_batch_size=aa_batch_size,
                chunk=chunk,
                aa_version=aa_version,
            )
            warn_list.extend(w for w in entry["warnings"] if w not in warn_list)

    accuracy, per_class, worst, timing, pps = {}, {}, {}, {}, {}
    y_cpu = y.cpu()
    for column in columns:
        f = flags[column]
        accuracy[column] = int(f.sum()) / n
        pc: list[float | None] = []
        for c in range(num_classes):
            mask = y_cpu == c
            count = int(mask.sum())
            pc.append(int(f[mask].sum()) / count if count else None)
        per_class[column] = pc
        present = [v for v in pc if v is not None]
        worst[column] = min(present) if present else float("nan")
        t = float(state.data["columns"][column]["time_s"])
        timing[column] = t
        pps[column] = n / t if t > 0 else float("inf")

    aa_breakdown: dict[str, float] = {}
    if "aa" in columns:
        aa_breakdown, aa_settings_extra, aa_warn = _aggregate_aa(state.data["columns"]["aa"], n)
        settings["aa"].update(aa_settings_extra)
        warn_list.extend(w for w in aa_warn if w not in warn_list)
    pps = {k: (v if v != float("inf") else 0.0) for k, v in pps.items()}

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
        versions=_versions(),
        resumed=state.resumed,
    )


def _run_column(
    column: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    entry: dict[str, Any],
    state: _State,
    bar: _Progress,
    *,
    clean: Tensor | None,
    eps: float,
    norm: str,
    seed: int,
    batch_size: int,
    aa_batch_size: int,
    chunk: int,
    aa_version: str,
) -> Tensor:
    """Per-point correctness for one column, chunk by chunk, resuming from ``entry``."""
    n = len(x)
    title = _COLUMN_TITLES[column]
    task = bar.add(title, n, entry["done"])
    while entry["done"] < n:
        start = entry["done"]
        end = min(start + chunk, n)
        t0 = time.perf_counter()
        chunk_info: dict[str, Any] = {"start": start, "end": end}
        if column == "aa":

            def on_log(msg: str, where: str = f"{title} [{start}:{end}]") -> None:
                if msg.startswith("running "):
                    bar.describe(task, f"{where} {msg[8:]}")
                elif (m := _AA_BATCH_RE.match(msg)) is not None:
                    bar.describe(task, f"{where} {m['attack']} {m['b']}/{m['nb']}")

            robust, _, info = _run_aa(
                model,
                x[start:end],
                y[start:end],
                eps=eps,
                norm=norm,
                seed=seed,
                batch_size=aa_batch_size,
                version=aa_version,
                on_log=on_log,
            )
            correct = robust
            chunk_info["aa"] = info
            for w in info["warnings"]:
                text = f"autoattack: {w}"
                if text not in entry["warnings"]:
                    entry["warnings"].append(text)
            if info["ball_violation"] > 1e-5:
                entry["warnings"].append(
                    f"aa: adversarial points leave the eps-ball or [0,1] by "
                    f"{info['ball_violation']:.3g} in points {start}:{end}"
                )
            bar.advance(task, end - start)
        else:
            parts = []
            for b0 in range(start, end, batch_size):
                b1 = min(b0 + batch_size, end)
                xb, yb = x[b0:b1], y[b0:b1]
                if column == "clean":
                    ok = _predict(model, xb) == yb
                else:
                    x_adv = adversarial_examples(
                        model, xb, yb, column, eps=eps, norm=norm, seed=seed, start=b0
                    )
                    viol = _ball_violation(x_adv, xb, eps, norm)
                    if viol > 1e-5:
                        entry["warnings"].append(
                            f"{column}: adversarial points leave the eps-ball or [0,1] by {viol:.3g}"
                        )
                    ok = _predict(model, x_adv) == yb
                    if clean is not None:
                        ok = ok & clean[b0:b1].to(ok.device)
                parts.append(ok.cpu())
                bar.advance(task, b1 - b0)
            correct = torch.cat(parts)
        entry["correct"].extend(int(v) for v in correct.tolist())
        entry["done"] = end
        entry["time_s"] += time.perf_counter() - t0
        entry["chunks"].append(chunk_info)
        state.save()
    bar.describe(task, title)
    return torch.tensor(entry["correct"], dtype=torch.bool)


def _aggregate_aa(
    entry: dict[str, Any], n: int
) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    infos = [c["aa"] for c in entry["chunks"] if "aa" in c]
    attacks: list[str] = list(infos[0]["attacks"]) if infos else list(AA_ATTACKS)
    clean = sum(i["clean"] for i in infos)
    broken = {a: sum(i["per_attack"].get(a, {}).get("broken", 0) for i in infos) for a in attacks}
    attacked = {
        a: sum(i["per_attack"].get(a, {}).get("attacked", 0) for i in infos) for a in attacks
    }
    warn: list[str] = []
    breakdown: dict[str, float] = {}
    if all(i["breakdown_consistent"] for i in infos):
        remaining = clean
        for a in attacks:
            remaining -= broken[a]
            breakdown[a] = remaining / n
    else:
        warn.append(
            "aa: the per-attack breakdown could not be read from AutoAttack's log consistently "
            "with its final flags; the breakdown is omitted (the AA number itself is unaffected)"
        )
    seconds = {
        a: round(sum(float(i["per_attack"].get(a, {}).get("seconds", 0.0)) for i in infos), 3)
        for a in attacks
    }
    extra = {
        "points_attacked": attacked,
        "points_broken": broken,
        "clean_correct": clean,
        "seconds_per_attack": seconds,
        "chunks": len(infos),
    }
    return breakdown, extra, warn


# ------------------------------------------------------------------------------ cross-check


def robustbench_cross_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "Linf",
    batch_size: int = 256,
    seed: int = 0,
    dataset: str = "cifar10",
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run ``robustbench.eval.benchmark()`` (robustbench 1.1.1) on the same model and points.

    What is cross-checked: robustbench's own evaluation driver — its eval-mode warning, its
    ``clean_accuracy``, its construction of AutoAttack ``standard`` and its recomputation of the
    robust accuracy from the returned adversarial points — against ardbench's driver (our per-
    point flags, chunking, breakdown). The attack code is the same (pyautoattack), so with one
    chunk, the same seed and batch size the two numbers must agree exactly.

    Two substitutions make it run offline with pyautoattack 0.2.0, both undone afterwards:
    ``robustbench.eval.AutoAttack`` becomes an adapter from the pre-0.2 API robustbench calls
    (``AutoAttack(model, norm=, eps=, version=, device=, log_path=)``,
    ``run_standard_evaluation(x, y, bs=)`` returning x_adv) to pyautoattack's keyword-only API,
    seeded with ``seed`` (robustbench passes none, which makes AutoAttack seed from the clock);
    and ``robustbench.eval.load_clean_dataset`` returns ``(x, y)`` instead of reading its own
    torchvision copy of the dataset (``dataset`` then only picks robustbench's preprocessing,
    ``ToTensor`` for CIFAR, which the substitute bypasses).
    """
    from .._compat import import_autoattack, import_robustbench

    aa_pkg = import_autoattack()
    import_robustbench()
    import robustbench.eval as rb_eval

    x_cpu = x.detach().to("cpu", torch.float32).contiguous()
    y_cpu = y.detach().to("cpu", torch.int64)
    dev = torch.device(device) if device is not None else x.device
    capture = _AALogCapture()

    class _PreV02AutoAttack:
        def __init__(
            self,
            model: nn.Module,
            norm: str = "Linf",
            eps: float = 0.3,
            version: str = "standard",
            device: Any = "cpu",
            log_path: Any = None,
            **_: Any,
        ) -> None:
            self._aa = aa_pkg.AutoAttack(
                model, norm=norm, eps=eps, version=version, device=device, seed=seed
            )

        def run_standard_evaluation(
            self,
            x_orig: Tensor,
            y_orig: Tensor,
            bs: int = 250,
            state_path: Any = None,
            return_labels: bool = False,
        ) -> Any:
            x_adv, y_adv = self._aa.run_standard_evaluation(
                x_orig.contiguous(), y_orig, batch_size=bs, state_path=state_path
            )
            return (x_adv, y_adv) if return_labels else x_adv

    def _load_clean_dataset(
        dataset: Any, n_examples: int | None, data_dir: Any, prepr: Any
    ) -> tuple[Tensor, Tensor]:
        return x_cpu[:n_examples], y_cpu[:n_examples]

    saved = (rb_eval.AutoAttack, rb_eval.load_clean_dataset)
    rb_eval.AutoAttack, rb_eval.load_clean_dataset = _PreV02AutoAttack, _load_clean_dataset
    stdout = io.StringIO()
    t0 = time.perf_counter()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            capture.attached(),
            contextlib.redirect_stdout(stdout),
        ):
            warnings.simplefilter("always")
            clean, robust = rb_eval.benchmark(
                model,
                n_examples=len(x_cpu),
                dataset=dataset,
                threat_model=norm,
                device=dev,
                batch_size=batch_size,
                eps=eps,
            )
    finally:
        rb_eval.AutoAttack, rb_eval.load_clean_dataset = saved
    return {
        "tool": "robustbench.eval.benchmark",
        "robustbench_version": _dist_version("robustbench"),
        "clean": float(clean),
        "aa": float(robust),
        "seconds": time.perf_counter() - t0,
        "seed": seed,
        "batch_size": batch_size,
        "warnings": [str(w.message) for w in caught] + list(dict.fromkeys(capture.warnings)),
        "stdout": stdout.getvalue().strip().splitlines(),
        "what": "robustbench 1.1.1 benchmark() driver on the same model and points, "
        "AutoAttack standard via an adapter to pyautoattack 0.2.0, same seed",
    }


# ------------------------------------------------------------------------------ model_info


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def _dataset_name(spec: str, num_classes: int) -> str:
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
    (FGSM / PGD-20 / CW / the robustbench cross-check) when it is below AutoAttack's;
    ``unreliable`` is true when AutoAttack's own checks fired.
    """
    meta = dict(metadata or {})
    if "aa" not in result.accuracy:
        raise ConfigError("model_info needs the AutoAttack column: run with attacks including aa")
    aa = result.accuracy["aa"]
    others = [v for k, v in result.accuracy.items() if k in ("fgsm", "pgd20", "cw")]
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
        "clean_acc": _pct(result.accuracy["clean"]),
        "reported": reported,
        "autoattack_acc": _pct(aa),
        "external": _pct(min(lower)) if lower else None,
        "unreliable": result.aa_unreliable,
        "footnote": footnote,
    }


# ---------------------------------------------------------------------------------- the CLI


def evaluate_spec(
    model_spec: str,
    dataset_spec: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    n_examples: int | None = None,
    attacks: str | Sequence[str] = ("clean", "fgsm", "pgd20", "cw", "aa"),
    eps: float | str = 8 / 255,
    norm: str = "Linf",
    batch_size: int | str = "auto",
    aa_batch_size: int = DEFAULT_AA_BATCH_SIZE,
    seed: int = 0,
    device: str | torch.device = "auto",
    json_out: str | Path | None = None,
    model_info_out: str | Path | None = None,
    compliant: bool = False,
    cross_check: str | None = None,
    state_dir: str | Path | None = None,
    chunk_size: int | None = None,
    model_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
) -> EvalResult:
    """Load ``model_spec`` and the first ``n_examples`` test points of ``dataset_spec``; evaluate.

    Writes ``json_out`` (``EvalResult.to_dict()``) and ``model_info_out`` (:func:`model_info`)
    atomically. ``state_dir`` keeps a resumable state file per evaluation
    (``eval-<key>.json``). ``cross_check="robustbench"`` also runs
    :func:`robustbench_cross_check` on the same model and points.
    """
    from ..data import load_dataset
    from ..models import load_model
    from ..models.probe import check_model_fits

    if cross_check not in (None, "robustbench"):
        raise ConfigError(f"--cross-check supports only 'robustbench', got {cross_check!r}")
    eps = parse_number(eps)
    check_radius("eps", Eps(eps))
    columns = parse_attacks(attacks)
    if model_info_out is not None and "aa" not in columns:
        raise ConfigError("--model-info needs the AutoAttack column (--attacks ...,aa)")
    dev = check_device(device)
    ds = load_dataset(dataset_spec, data_dir=data_dir, download=download)
    loaded = load_model(
        model_spec,
        num_classes=ds.num_classes,
        dataset=_rb_dataset(ds),
        runs_dir=runs_dir,
        model_dir=model_dir,
        download=download,
        device=dev,
    )
    x, y = ds.test_subset(n_examples, device=dev)
    check_model_fits(loaded.module, x[:2], ds.max_label, f"model {model_spec!r}")
    state_path = None
    if state_dir is not None:
        blob = json.dumps(
            [loaded.sha256, ds.fingerprint, len(x), eps, norm, seed, aa_batch_size, chunk_size]
        ).encode()
        state_path = Path(state_dir) / f"eval-{hashlib.sha256(blob).hexdigest()[:16]}.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComplianceWarning)  # render_eval shows them
        result = evaluate_model(
            loaded.module,
            x,
            y,
            attacks=columns,
            eps=eps,
            norm=norm,
            batch_size=batch_size,
            aa_batch_size=aa_batch_size,
            seed=seed,
            device=dev,
            num_classes=ds.num_classes,
            progress=progress,
            state_path=state_path,
            chunk_size=chunk_size,
            compliant=compliant,
            console=console,
        )
    result.model = {
        "spec": model_spec,
        "arch": loaded.arch,
        "sha256": loaded.sha256,
        "source": loaded.source,
    }
    result.data = {
        "spec": dataset_spec,
        "fingerprint": ds.fingerprint,
        "test_fingerprint": ds.test_fingerprint,
        "first_n_test_points": len(x),
    }
    if state_path is not None:
        result.data["state_path"] = str(state_path)
    if cross_check == "robustbench":
        with fp32_math(dev):  # the same arithmetic as ardbench's own run
            cc = robustbench_cross_check(
                loaded.module,
                x,
                y,
                eps=eps,
                norm=norm,
                batch_size=aa_batch_size,
                seed=seed,
                dataset=_rb_dataset(ds),
                device=dev,
            )
        cc["ardbench_clean"] = result.accuracy["clean"]
        if "aa" in result.accuracy:
            cc["ardbench_aa"] = result.accuracy["aa"]
            cc["aa_difference"] = cc["aa"] - result.accuracy["aa"]
            cc["agree"] = abs(cc["aa_difference"]) < 0.5 / len(x) and abs(
                cc["clean"] - result.accuracy["clean"]
            ) < 0.5 / len(x)
            if result.settings["aa"].get("chunks", 1) > 1:
                cc["note"] = (
                    "ardbench ran AutoAttack in chunks; robustbench in one call: the "
                    "random inits differ, so small differences are expected"
                )
        result.cross_check = cc
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict())
    if model_info_out is not None:
        write_json_atomic(
            model_info_out,
            model_info(
                result,
                dataset=_dataset_name(dataset_spec, ds.num_classes),
                architecture=None if loaded.arch == "export" else loaded.arch,
                metadata=metadata,
            ),
            sort_keys=False,  # RobustBench's model_info field order
        )
    return result


def _rb_dataset(ds: Any) -> str:
    """The RobustBench dataset name for model loading / the cross-check (cifar10 by default)."""
    name = _dataset_name(ds.spec, ds.num_classes)
    if name in ("cifar10", "cifar100", "imagenet"):
        return name
    return "cifar100" if ds.num_classes == 100 else "cifar10"


def _format_step(step: float) -> str:
    k = step * 255
    return f"{k:.4g}/255" if abs(k - round(k, 3)) < 1e-6 else f"{step:.4g}"


def render_eval(result: EvalResult, console: Any = None) -> None:
    """Print the result as a rich table (plus AA breakdown, cross-check, warnings)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = (
        f"{(result.model or {}).get('spec', 'model')} — {result.n_examples} points, "
        f"{result.norm} eps {format_eps(result.eps)}, seed {result.seed}"
    )
    table = Table(title=title)
    for name, justify in (
        ("column", "left"),
        ("accuracy %", "right"),
        ("worst class %", "right"),
        ("step", "right"),
        ("steps", "right"),
        ("time s", "right"),
        ("points/s", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for column, acc in result.accuracy.items():
        s = result.settings.get(column, {})
        step = s.get("step")
        table.add_row(
            _COLUMN_TITLES.get(column, column),
            f"{100 * acc:.2f}",
            f"{100 * result.worst_class[column]:.2f}",
            _format_step(step) if isinstance(step, float) else "—",
            str(s.get("steps", "—")) if column != "aa" else "AA std",
            f"{result.timing_s.get(column, 0.0):.1f}",
            f"{result.points_per_s.get(column, 0.0):.1f}",
        )
    console.print(table)
    if result.aa_breakdown:
        secs = result.settings.get("aa", {}).get("seconds_per_attack", {})
        steps = " → ".join(
            f"{k.upper()} {100 * v:.2f}%" + (f" ({secs[k]:.0f} s)" if k in secs else "")
            for k, v in result.aa_breakdown.items()
        )
        console.print(f"AutoAttack breakdown (robust accuracy after each attack): {steps}")
    if result.cross_check:
        cc = result.cross_check
        line = (
            f"cross-check {cc['tool']}: clean {100 * cc['clean']:.2f}% "
            f"(ardbench {100 * cc.get('ardbench_clean', float('nan')):.2f}%), "
            f"AA {100 * cc['aa']:.2f}%"
        )
        if "ardbench_aa" in cc:
            line += f" (ardbench {100 * cc['ardbench_aa']:.2f}%)"
            line += " — [green]agree[/]" if cc.get("agree") else " — [yellow]differ[/]"
        console.print(line)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
