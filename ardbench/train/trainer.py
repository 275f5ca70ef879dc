"""The one trainer: every method, every recipe, same loop.

``train`` is a pipeline of named stages: :func:`~ardbench.train.setup.prepare` (data, networks,
method: validated, nothing written) -> :func:`open_run_dir` -> :func:`build_loop` (optimiser,
loader, step, checkpoint rule; state restored on resume) -> :func:`run_epochs` ->
:func:`final_models` -> :func:`evaluate_models` -> :func:`write_run_record`.

Per run directory (``runs/<run_id>/``): ``config.json`` (resolved config, written first),
``log.jsonl`` (one line per finished epoch), ``checkpoint.pt`` (atomic, every epoch, only with
finite weights), and at the end ``model.safetensors`` + ``model.pt`` + ``model.json`` (the
checkpoint the protocol's rule reports: the last epoch by default, never a test-selected one)
and ``record.json``.

Reproducibility: every random draw of epoch e comes from generators seeded by (seed, e) (the
loader's permutation and augmentation, and the global RNG that the attacks' random starts use),
so ``--resume`` after epoch k continues to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ..data import DeviceLoader
from ..data.loader import to_float01
from ..errors import first_line
from ..io import atomic_write_bytes, file_sha256, save_torch_atomic, write_json_atomic
from ..models import logits_and_features
from ..protocols import RunConfig
from ..results.records import build_record, validate_record, write_record
from .checkpoint import (
    CONFIG,
    RunDirError,
    all_finite,
    clean_run_dir,
    load_checkpoint,
    log_epoch,
    read_log,
    save_checkpoint,
    truncate_log,
)
from .progress import Reporter
from .schedule import epoch_seed, lr_at
from .selection import SWA, BestOnHoldout
from .setup import RunParts, TrainingError, prepare
from .speed import (
    compile_settings,
    cudnn_settings,
    make_optimizer,
    optimizer_state,
    param_groups,
    portable_state,
    prepare_models,
    set_lr,
    set_optimizer_impl,
)
from .stats import NonFiniteError
from .step import TrainStep, make_attack_fn

__all__ = ["RunResult", "TrainingError", "resume", "train"]


EpochHook = Callable[[Path, dict[str, Any]], None]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    completed: bool
    record: dict[str, Any] | None


@dataclass
class Loop:
    """What the epochs need: built once per process (again on resume)."""

    parts: RunParts
    run_dir: Path
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader
    step: TrainStep
    start_epoch: int = 0
    elapsed: float = 0.0
    best: BestOnHoldout | None = None
    swa: SWA | None = None


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # a run id is a file name and must match results.schema.ID_PATTERN (a .pt2 student is a path)
    student = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.student.split(":")[0])[-60:].strip("._-")
    student = student or "student"
    return f"{cfg.method}-{student}-s{cfg.train.seed}-{stamp}-{secrets.token_hex(2)}"


def open_run_dir(cfg: RunConfig, runs_dir: Path, run_dir: Path | None, resume: bool) -> Path:
    """A new directory (never reused: concurrent runs stay apart), or the one being resumed."""
    if run_dir is None:
        run_dir = runs_dir / new_run_id(cfg)
        run_dir.mkdir(parents=True, exist_ok=False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_run_dir(run_dir)
    if not resume:
        write_json_atomic(run_dir / CONFIG, cfg.to_dict())
    return run_dir


def build_loop(parts: RunParts, run_dir: Path, resume: bool, console: Console) -> Loop:
    cfg, plan = parts.cfg, parts.plan
    assert plan is not None and parts.loader is not None  # set by setup_run
    student, method = parts.student.module, parts.method
    teacher = parts.teacher.module if parts.teacher else None
    extras = {k: m.module for k, m in parts.extras.items()}
    prepare_models(plan, student, teacher, *extras.values())
    console.print(
        "[dim]speed: "
        + ", ".join(f"{k}={v}" for k, v in plan.to_dict().items() if k not in ("device", "notes"))
        + "".join(f"; {n}" for n in plan.notes)
        + "[/]"
    )
    optimizer = make_optimizer(param_groups(student, method, cfg.train), cfg.train, plan)
    loader = parts.loader
    step = TrainStep(
        method=method,
        method_name=cfg.method,
        student=student,
        teacher=teacher,
        extras=extras,
        optimizer=optimizer,
        attack_fn=make_attack_fn(student, cfg.attack),
        attack_cfg=cfg.attack,
        plan=plan,
        num_classes=parts.dataset.num_classes,
        total_epochs=cfg.train.epochs,
        steps_per_epoch=len(loader),
        features=logits_and_features,
    )
    loop = Loop(parts, run_dir, optimizer, loader, step)
    rule = cfg.checkpoint
    if rule.rule == "best-on-holdout":
        loop.best = BestOnHoldout()
    if rule.rule == "swa":
        assert rule.swa_start is not None  # CheckpointConfig requires it for swa
        loop.swa = SWA(student, rule.swa_start)
    if resume:
        _restore(loop, console)
    return loop


def _restore(loop: Loop, console: Console) -> None:
    run_dir, parts = loop.run_dir, loop.parts
    if not (run_dir / "checkpoint.pt").is_file():
        truncate_log(run_dir, 0)  # no epoch finished: start over in the same directory
        console.print(f"[bold]resuming[/] {run_dir.name}: no epoch had finished; starting it")
        return
    state = load_checkpoint(run_dir, parts.device)
    try:
        parts.student.module.load_state_dict(state["student"])
        parts.method.load_state_dict(state["method"])
        loop.optimizer.load_state_dict(state["optimizer"])
        if loop.best is not None:
            loop.best.load_state_dict(state.get("best"))
        if loop.swa is not None and state.get("swa") is not None:
            loop.swa.load_state_dict(state["swa"])
        loop.start_epoch, loop.elapsed = int(state["epoch"]), float(state["elapsed_s"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise RunDirError(
            f"{run_dir / 'checkpoint.pt'} does not fit this run's networks ({first_line(exc)})",
            hint="it was edited or comes from another run; start a new run",
        ) from None
    assert parts.plan is not None
    set_optimizer_impl(loop.optimizer, parts.plan)
    truncate_log(run_dir, loop.start_epoch)
    console.print(
        f"[bold]resuming[/] {run_dir.name} after epoch {loop.start_epoch}/{parts.cfg.train.epochs}"
    )


def _raise_non_finite(epoch: int, summary: Any, steps: int, what: str | None = None) -> None:
    where = (
        f"step {summary.first_bad_step + 1} of {steps}"
        if summary.first_bad_step is not None
        else f"one of its {steps} steps"
    )
    if what is None:
        parts = [f"loss term {', '.join(summary.bad_terms)}"] if summary.bad_terms else []
        if summary.bad_grads:
            parts.append("gradients")
        what = " and ".join(parts) or "values"
    raise NonFiniteError(
        f"non-finite {what} in epoch {epoch + 1}, first at {where}; the checkpoint of epoch "
        f"{epoch} is kept (resume from it with other settings, e.g. a lower train.lr)",
    )


def run_epoch(loop: Loop, epoch: int, reporter: Reporter) -> dict[str, Any]:
    """One epoch; returns its log line. Host reads: once, after the last step."""
    cfg, step = loop.parts.cfg, loop.step
    t0 = time.perf_counter()
    lr = lr_at(epoch, cfg.train)
    set_lr(loop.optimizer, lr)  # in place for a device-tensor lr: no re-capture
    torch.manual_seed(epoch_seed(cfg.train.seed, epoch))
    step.stats.reset()
    steps = len(loop.loader)
    reporter.start_epoch(epoch, steps)
    for i, batch in enumerate(loop.loader.epoch_batches(epoch)):
        step(batch, epoch=epoch, step=i)
        reporter.step()
    summary = step.stats.read()
    if summary.bad_terms or summary.bad_grads:
        _raise_non_finite(epoch, summary, steps)
    student = loop.parts.student.module
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": lr,
        "losses": summary.losses,
        "diagnostics": summary.diagnostics,
    }
    if loop.parts.probe is not None:
        row["probe"] = loop.parts.probe.measure(student)
        if loop.best is not None:
            loop.best.observe(epoch, row["probe"], student)
    if loop.swa is not None:
        loop.swa.after_epoch(epoch, student)
    row["epoch_time_s"] = round(time.perf_counter() - t0, 3)
    row["speed"] = loop.parts.plan.to_dict() if loop.parts.plan is not None else {}
    return row


def _checkpoint_state(loop: Loop, epoch: int) -> dict[str, Any]:
    state = {
        "epoch": epoch + 1,
        "elapsed_s": loop.elapsed,
        "student": portable_state(loop.parts.student.module.state_dict()),
        "method": portable_state(loop.parts.method.state_dict()),
        "optimizer": optimizer_state(loop.optimizer),
    }
    if loop.best is not None:
        state["best"] = loop.best.state_dict()
    if loop.swa is not None:
        state["swa"] = portable_state(loop.swa.state_dict())
    return state


def run_epochs(
    loop: Loop, end_epoch: int, reporter: Reporter, on_epoch: EpochHook | None = None
) -> None:
    cfg, plan = loop.parts.cfg, loop.parts.plan
    assert plan is not None
    with cudnn_settings(plan, cfg.train.deterministic), compile_settings(plan, cfg.train.compile):
        for epoch in range(loop.start_epoch, end_epoch):
            t0 = time.perf_counter()
            row = run_epoch(loop, epoch, reporter)
            loop.elapsed += time.perf_counter() - t0
            state = _checkpoint_state(loop, epoch)
            if not all_finite({"student": state["student"], "method": state["method"]}):
                raise NonFiniteError(
                    f"the weights are not finite after epoch {epoch + 1}; the checkpoint of "
                    f"epoch {epoch} is kept (resume from it with other settings)"
                )
            # log first: a line beyond the checkpoint is dropped on resume
            log_epoch(loop.run_dir, row)
            save_checkpoint(loop.run_dir, state)
            reporter.end_epoch(epoch, row)
            if on_epoch is not None:
                on_epoch(loop.run_dir, row)


def final_models(loop: Loop) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
    """{checkpoint kind: (eval-mode network, info)}: ``last`` always; ``best-on-holdout`` or
    ``swa`` when the protocol's rule asks for it. The first entry is the rule's choice."""
    loop.step.release()  # evaluation: eager forwards, fp32 (no autocast here)
    student = loop.parts.student.module
    epochs = loop.parts.cfg.train.epochs
    out: dict[str, tuple[nn.Module, dict[str, Any]]] = {}
    if loop.swa is not None:
        batches = (b.x for b in loop.loader.epoch_batches(epochs))
        model = loop.swa.finalize(batches)
        out["swa"] = (model, {"averaged": loop.swa.count, "from_epoch": loop.swa.start + 1})
    if loop.best is not None and loop.best.best is not None:
        from .selection import plain_copy

        best = plain_copy(student)
        best.load_state_dict(loop.best.best["state"])
        info = {k: v for k, v in loop.best.best.items() if k != "state"}
        info["ties"] = "the later epoch"  # BestOnHoldout.observe keeps a later equal score
        out["best-on-holdout"] = (best.eval(), info)
    out["last"] = (student.eval(), {"epoch": epochs})
    return out


def _eval_points(parts: RunParts):
    """The points the final evaluation runs on: the first n test points, or, when the run holds
    out training data and selects no checkpoint on it, that held-out slice (the test set is
    then never looked at: hyper-parameter sweeps)."""
    cfg, split = parts.cfg, parts.split
    if split.x_hold is None or split.y_hold is None or cfg.checkpoint.rule == "best-on-holdout":
        x, y = parts.dataset.test_subset(cfg.eval.n_examples, parts.device)
        return x, y, "test"
    n = cfg.eval.n_examples or len(split.y_hold)
    x = to_float01(split.x_hold[:n].to(parts.device)).contiguous()
    return (
        x,
        split.y_hold[:n].to(parts.device),
        f"holdout: last {cfg.train.holdout} training examples",
    )


def evaluate_models(parts: RunParts, models: dict, progress: bool) -> dict[str, dict[str, Any]]:
    from ..eval.core import evaluate_model

    cfg = parts.cfg
    x, y, split = _eval_points(parts)
    blocks = {}
    for kind, (model, _) in models.items():
        result = evaluate_model(
            model,
            x,
            y,
            attacks=tuple(cfg.eval.attacks),
            eps=float(cfg.eval_eps),
            batch_size=cfg.eval.batch_size,
            aa_batch_size=cfg.eval.aa_batch_size,
            seed=cfg.train.seed,
            progress=progress,
        )
        blocks[kind] = {**result.to_dict(), "split": split}
    return blocks


def save_models(run_dir: Path, parts: RunParts, models: dict) -> dict[str, dict[str, Any]]:
    """Each final network's weights (``model.pt`` for the rule's choice, ``model-<kind>.pt``
    for the others) with their sha256; the rule's choice also as ``model.safetensors`` (no
    pickle: the file to share)."""
    from safetensors.torch import save as safetensors_bytes

    files = {}
    for i, (kind, (model, info)) in enumerate(models.items()):
        name = "model.pt" if i == 0 else f"model-{kind}.pt"
        state = portable_state(model.state_dict())
        save_torch_atomic(run_dir / name, state)
        if i == 0:
            atomic_write_bytes(run_dir / "model.safetensors", safetensors_bytes(state))
        files[kind] = {"path": str(run_dir / name), "sha256": file_sha256(run_dir / name), **info}
    write_json_atomic(
        run_dir / "model.json",
        {"arch": parts.student.arch, "num_classes": parts.dataset.num_classes},
    )
    return files


def _cost(loop: Loop) -> dict[str, float]:
    """Training throughput and peak memory for the record's hardware block (the site's cost
    columns): CUDA's peak allocation on a GPU, the process's peak resident size on a CPU."""
    cost = {
        "train_images_per_s": round(
            loop.loader.num_examples * loop.parts.cfg.train.epochs / max(loop.elapsed, 1e-9), 1
        )
    }
    device = loop.parts.device
    if device.type == "cuda":
        cost["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        try:
            import resource
        except ImportError:  # Windows
            return cost
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
        cost["peak_memory_mb"] = round(kib / (2**20 if sys.platform == "darwin" else 2**10), 1)
    return cost


def write_run_record(loop: Loop, files: dict, blocks: dict, started_at: datetime) -> dict[str, Any]:
    parts = loop.parts
    chosen, *others = list(files)
    record = build_record(
        cfg=parts.cfg,
        run_id=loop.run_dir.name,
        dataset=parts.dataset,
        teacher=parts.teacher,
        extra_teachers=parts.extras,
        student=parts.student,
        eval_block=blocks[chosen],
        wall_time_s=loop.elapsed,
        device=parts.device,
        # the path and sha256, what chose it (the epoch, its holdout score, the tie rule) and
        # the same tensors without pickle: the file to publish (ardbench verify, submit)
        checkpoint={
            **files[chosen],
            "weights": {
                "format": "safetensors",
                "sha256": file_sha256(loop.run_dir / "model.safetensors"),
            },
        },
        started_at=started_at,
        checkpoint_rule=parts.cfg.checkpoint.rule,
        checkpoints={kind: {**files[kind], "eval": blocks[kind]} for kind in others},
        teacher_checks={k: c.to_dict() for k, c in parts.teacher_checks.items()},
    )
    assert parts.plan is not None
    record["hardware"]["speed"] = parts.plan.to_dict()
    record["hardware"].update(_cost(loop))
    validate_record(record)
    write_record(loop.run_dir, record)
    return record


def train(
    cfg: RunConfig,
    *,
    runs_dir: str | Path = "runs",
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    stop_after_epoch: int | None = None,
    on_epoch: EpochHook | None = None,
) -> RunResult:
    """Train ``cfg`` to the end (or until ``stop_after_epoch`` epochs are done), then evaluate
    the checkpoint(s) the protocol's rule reports and write ``record.json``. ``on_epoch(run_dir,
    row)`` is called after each epoch's log line and checkpoint (e.g. TensorBoard logging)."""
    console = console or Console(stderr=True, quiet=not progress)
    started_at = datetime.now(timezone.utc)
    runs_dir = Path(runs_dir)
    parts = prepare(cfg, runs_dir=runs_dir, console=console)
    run_dir = open_run_dir(cfg, runs_dir, Path(run_dir) if run_dir else None, resume)
    loop = build_loop(parts, run_dir, resume, console)
    epochs = cfg.train.epochs
    end_epoch = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    with Reporter(console, cfg.method, epochs, enabled=progress) as reporter:
        run_epochs(loop, end_epoch, reporter, on_epoch)
    if end_epoch < epochs:
        return RunResult(run_dir.name, run_dir, completed=False, record=None)
    models = final_models(loop)
    files = save_models(run_dir, parts, models)
    blocks = evaluate_models(parts, models, progress)
    record = write_run_record(loop, files, blocks, started_at)
    return RunResult(run_dir.name, run_dir, completed=True, record=record)


def resume(run_dir: str | Path, **kwargs: Any) -> RunResult:
    """Continue an interrupted run from its last checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG
    if not cfg_path.is_file():
        raise TrainingError(f"{run_dir} is not an ardbench run directory (no {CONFIG})")
    if (run_dir / "record.json").is_file():
        raise TrainingError(f"{run_dir} already finished (record.json exists); nothing to resume")
    try:
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{cfg_path} is not readable JSON ({exc})") from None
    cfg = RunConfig.from_dict(saved, where=str(cfg_path))
    read_log(run_dir)  # a log that is not a log fails now, not after loading everything
    kwargs.setdefault("runs_dir", run_dir.parent)
    return train(cfg, run_dir=run_dir, resume=True, **kwargs)
