"""The one trainer: every method, every recipe, same loop.

Per run directory (``runs/<run_id>/``): ``config.json`` (resolved config, written first),
``log.jsonl`` (one line per finished epoch), ``checkpoint.pt`` (atomic, every epoch: student,
method parameters, optimiser, epoch), and at the end ``model.pt`` + ``model.json`` (the last-epoch
student: never a test-selected one) and ``record.json``.

Reproducibility: every random draw of epoch e comes from generators seeded by (seed, e) (the
loader's permutation and augmentation, and the global RNG that the attacks' random starts use),
so ``--resume`` after epoch k continues to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from ..data import DeviceLoader, load_dataset
from ..device import resolve_device
from ..io import append_jsonl, file_sha256, save_torch_atomic, write_json_atomic
from ..methods import Method, build_method
from ..models import build_arch, feature_dim, load_model, logits_and_features
from ..protocols.config import RunConfig, TrainConfig, run_config_from_dict
from ..results.records import build_record, validate_paper, validate_record, write_record
from .schedule import epoch_seed, lr_at
from .speed import (
    compile_settings,
    cudnn_settings,
    make_optimizer,
    param_groups,
    portable_state,
    prepare_models,
    resolve_speed,
    set_optimizer_impl,
)
from .step import TrainStep, freeze, make_attack_fn


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    completed: bool
    record: dict[str, Any] | None


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    student = cfg.student.split(":")[0].replace("/", "_")
    return f"{cfg.method}-{student}-s{cfg.train.seed}-{stamp}-{secrets.token_hex(2)}"


def _load_teacher(spec: str, cfg: RunConfig, num_classes: int, runs_dir: Path, device, console):
    from .demo import DEMO_TEACHERS, ensure_demo_teacher

    if spec in DEMO_TEACHERS:
        spec = ensure_demo_teacher(console=console, spec=spec)
    return load_model(
        spec,
        num_classes=num_classes,
        dataset=cfg.dataset,
        runs_dir=runs_dir,
        download=cfg.download,
        device=device,
    )


def train(
    cfg: RunConfig,
    *,
    runs_dir: str | Path = "runs",
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    stop_after_epoch: int | None = None,
) -> RunResult:
    """Train ``cfg`` to the end (or until ``stop_after_epoch`` epochs are done), then evaluate
    the last-epoch student and write ``record.json``."""
    console = console or Console(stderr=True, quiet=not progress)
    started_at = datetime.now(timezone.utc)
    validate_paper(cfg.paper)  # a bad paper block fails now, not after hours of training
    runs_dir = Path(runs_dir)
    if run_dir is None:
        run_id = new_run_id(cfg)
        run_dir = runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=False)  # never reuse: concurrent runs stay apart
    run_dir = Path(run_dir)
    run_id = run_dir.name
    if not resume:
        write_json_atomic(run_dir / "config.json", cfg.to_dict())

    device = resolve_device(cfg.device)
    tc = cfg.train

    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download)
    if not ds.has_train:
        raise TrainingError(f"dataset {cfg.dataset!r} has no training arrays (x_train, y_train)")

    method: Method = build_method(cfg.method, cfg.method_config)
    torch.manual_seed(tc.seed)  # student initialisation
    student = load_model(
        cfg.student,
        num_classes=ds.num_classes,
        dataset=cfg.dataset,
        runs_dir=runs_dir,
        device=device,
    )
    student.module.train()
    teacher_loaded = None
    if type(method).needs_teacher:
        if not cfg.teacher:
            raise TrainingError(
                f"method {cfg.method!r} distils from a teacher: pass --teacher SPEC "
                "(e.g. ARCH:PATH, PATH.pt2, robustbench:ID, run:RUN_ID)"
            )
        teacher_loaded = _load_teacher(cfg.teacher, cfg, ds.num_classes, runs_dir, device, console)
        freeze(teacher_loaded.module)
    teacher = teacher_loaded.module if teacher_loaded else None
    extras = {}
    for name, spec in method.extra_models().items():
        if not spec:
            raise TrainingError(
                f"method {cfg.method!r} needs the extra network {name!r} and its method_config "
                f"names none: set it as baselines/{cfg.method}/README.md says (a model spec)"
            )
        extras[name] = freeze(
            _load_teacher(spec, cfg, ds.num_classes, runs_dir, device, console).module
        )

    s_dim = feature_dim(student.module)
    t_dim = None
    if teacher is not None:
        try:
            t_dim = feature_dim(teacher)
        except Exception:  # some archives expose no penultimate layer; only vargap needs it
            t_dim = None
    method.setup(
        student=student.module,
        teacher=teacher,
        num_classes=ds.num_classes,
        feature_dims=(s_dim, t_dim),
        # a fresh network of the student's architecture (PeerAiD's peer), built as the
        # architecture initialises itself
        student_factory=lambda: build_arch(student.arch, num_classes=ds.num_classes).to(device),
    )
    method.to(device)
    student.module.train()

    # speed features (ardbench/train/speed.py): `auto` resolved for this device; what they resolved
    # to goes into log.jsonl and the record, config.json keeps what was asked
    plan = resolve_speed(tc, device, method)
    prepare_models(plan, student.module, teacher, *extras.values())
    console.print(
        "[dim]speed: "
        + ", ".join(f"{k}={v}" for k, v in plan.to_dict().items() if k not in ("device", "notes"))
        + "".join(f"; {n}" for n in plan.notes)
        + "[/]"
    )

    optimizer = make_optimizer(param_groups(student.module, method, tc), tc, plan)

    start_epoch, elapsed = 0, 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"{run_dir} has no checkpoint.pt to resume from; start a new run")
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        student.module.load_state_dict(state["student"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        set_optimizer_impl(optimizer, plan)
        start_epoch, elapsed = int(state["epoch"]), float(state["elapsed_s"])
        _truncate_log(run_dir / "log.jsonl", start_epoch)
        console.print(f"[bold]resuming[/] {run_id} after epoch {start_epoch}/{tc.epochs}")

    x_train, y_train, x_hold, y_hold = _split_train(ds.x_train, ds.y_train, tc)
    loader = DeviceLoader(
        x_train, y_train, batch_size=tc.batch_size, seed=tc.seed, augment=tc.augment, device=device
    )
    attack_fn = make_attack_fn(student.module, cfg.attack)
    train_step = TrainStep(
        method=method,
        method_name=cfg.method,
        student=student.module,
        teacher=teacher,
        extras=extras,
        optimizer=optimizer,
        attack_fn=attack_fn,
        attack_cfg=cfg.attack,
        plan=plan,
        num_classes=ds.num_classes,
        total_epochs=tc.epochs,
        features=logits_and_features,
    )
    end_epoch = tc.epochs if stop_after_epoch is None else min(tc.epochs, stop_after_epoch)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with (
        cudnn_settings(plan, tc.deterministic),
        compile_settings(plan, tc.compile),
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[terms]}"),
            console=console,
            disable=not progress,
            transient=False,
        ) as bar,
    ):
        for epoch in range(start_epoch, end_epoch):
            t0 = time.perf_counter()
            lr = lr_at(epoch, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            torch.manual_seed(epoch_seed(tc.seed, epoch))
            sums: dict[str, float] = defaultdict(float)
            diag: dict[str, float] = defaultdict(float)
            n_seen = 0
            task = bar.add_task(
                f"{cfg.method} epoch {epoch + 1}/{tc.epochs}", total=len(loader), terms=""
            )
            for step, batch in enumerate(loader.epoch_batches(epoch)):
                terms, values = train_step(
                    batch,
                    epoch=epoch,
                    step=step,
                    log=lambda k, v, _d=diag, _b=batch.y.shape[0]: _d.__setitem__(
                        k, _d[k] + float(v) * _b
                    ),
                )
                b = batch.y.shape[0]
                n_seen += b
                for k, v in values.items():
                    sums[k] += v * b
                bar.update(
                    task,
                    advance=1,
                    terms=" ".join(f"{k}={sums[k] / n_seen:.4f}" for k in terms),
                )
            elapsed += time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "lr": lr,
                "losses": {k: v / n_seen for k, v in sums.items()},
                "diagnostics": {k: v / n_seen for k, v in diag.items()},
                "epoch_time_s": round(time.perf_counter() - t0, 3),
                "speed": plan.to_dict(),
            }
            # log first: a line beyond the checkpoint is dropped on resume (_truncate_log)
            append_jsonl(run_dir / "log.jsonl", row)
            save_torch_atomic(
                ckpt_path,
                {
                    "epoch": epoch + 1,
                    "elapsed_s": elapsed,
                    "student": portable_state(student.module.state_dict()),
                    "method": portable_state(method.state_dict()),
                    "optimizer": optimizer.state_dict(),
                },
            )

    if end_epoch < tc.epochs:
        return RunResult(run_id, run_dir, completed=False, record=None)

    # last-epoch model, never a test-selected one
    model_path = run_dir / "model.pt"
    save_torch_atomic(model_path, portable_state(student.module.state_dict()))
    write_json_atomic(run_dir / "model.json", {"arch": student.arch, "num_classes": ds.num_classes})
    from ..eval.evaluator import evaluate_model

    train_step.release()  # evaluation: eager forwards, fp32 (no autocast here)
    eval_model = student.module.eval()
    if x_hold is None:
        x_test, y_test = ds.test_subset(cfg.eval.n_examples, device)
        split = "test"
    else:
        n = cfg.eval.n_examples or len(y_hold)
        x_test = x_hold[:n].float() / 255 if x_hold.dtype == torch.uint8 else x_hold[:n].float()
        x_test, y_test = x_test.contiguous().to(device), y_hold[:n].to(device)
        split = f"holdout: last {tc.holdout} training examples"
    eps = cfg.eval.eps if cfg.eval.eps is not None else cfg.attack.eps
    result = evaluate_model(
        eval_model,
        x_test,
        y_test,
        attacks=tuple(cfg.eval.attacks),
        eps=eps,
        batch_size=cfg.eval.batch_size,
        aa_batch_size=cfg.eval.aa_batch_size,
        seed=tc.seed,
        progress=progress,
    )
    eval_block = result.to_dict()
    eval_block["split"] = split
    record = build_record(
        cfg=cfg,
        run_id=run_id,
        dataset=ds,
        teacher=teacher_loaded,
        student=student,
        eval_block=eval_block,
        wall_time_s=elapsed,
        device=device,
        checkpoint={"path": str(model_path), "sha256": file_sha256(model_path)},
        started_at=started_at,
    )
    record["hardware"]["speed"] = plan.to_dict()
    validate_record(record)
    write_record(run_dir, record)
    return RunResult(run_id, run_dir, completed=True, record=record)


def _split_train(x: Tensor, y: Tensor, tc: TrainConfig):
    """(x_train, y_train, x_holdout, y_holdout): holdout = the last ``tc.holdout`` examples,
    then ``train_subset`` = the first N of what remains."""
    x_hold = y_hold = None
    if tc.holdout:
        if tc.holdout >= len(y):
            raise TrainingError(f"train.holdout={tc.holdout} leaves no training data ({len(y)})")
        x, x_hold = x[: -tc.holdout], x[-tc.holdout :]
        y, y_hold = y[: -tc.holdout], y[-tc.holdout :]
    if tc.train_subset is not None:
        x, y = x[: tc.train_subset], y[: tc.train_subset]
    return x, y, x_hold, y_hold


def resume(run_dir: str | Path, **kwargs: Any) -> RunResult:
    """Continue an interrupted run from its last checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise TrainingError(f"{run_dir} is not an ardbench run directory (no config.json)")
    cfg = run_config_from_dict(json.loads(cfg_path.read_text()))
    if (run_dir / "record.json").is_file():
        raise TrainingError(f"{run_dir} already finished (record.json exists); nothing to resume")
    kwargs.setdefault("runs_dir", run_dir.parent)
    return train(cfg, run_dir=run_dir, resume=True, **kwargs)


def _truncate_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after the checkpoint (written before an interruption)."""
    if not path.is_file():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["epoch"] <= epochs_done]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
