"""Building a run before it starts: data, networks, method, speed plan — validated, no files.

Everything that can be wrong with a run (a dataset that does not load, a teacher that is
missing, a device that is not there, a holdout that leaves no data, a checkpoint rule that
cannot apply) fails here, before a run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from torch import Tensor

from ..data import Dataset, DeviceLoader, load_dataset
from ..data.loader import to_float01
from ..device import check_device
from ..errors import ArdbenchError
from ..methods import Method, build_method
from ..models import LoadedModel, build_arch, feature_dim, load_model
from ..models.probe import check_model_fits
from ..protocols import RunConfig
from .selection import Probe
from .speed import SpeedPlan, resolve_speed
from .step import freeze
from .teacher_check import CHECK_POINTS, TeacherCheck, check_teacher


class TrainingError(ArdbenchError, RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


@dataclass
class Split:
    """The training images the loader sees, and the held-out slice (or None)."""

    x: Tensor
    y: Tensor
    x_hold: Tensor | None = None
    y_hold: Tensor | None = None


@dataclass
class RunParts:
    cfg: RunConfig
    device: torch.device
    dataset: Dataset
    split: Split
    method: Method
    student: LoadedModel
    teacher: LoadedModel | None
    extras: dict[str, LoadedModel] = field(default_factory=dict)
    plan: SpeedPlan | None = None
    probe: Probe | None = None
    loader: DeviceLoader | None = None
    # the teacher check of each frozen network ("teacher", then the method's extra models)
    teacher_checks: dict[str, TeacherCheck] = field(default_factory=dict)


def split_train(ds: Dataset, cfg: RunConfig) -> Split:
    """Holdout = the last ``train.holdout`` examples, then ``train_subset`` = the first N of
    what remains."""
    tc = cfg.train
    x, y = ds.x_train, ds.y_train
    if x is None or y is None:
        raise TrainingError(
            f"dataset {cfg.dataset!r} has no training split (x_train, y_train)",
            hint="train on a dataset with training images",
        )
    x_hold: Tensor | None = None
    y_hold: Tensor | None = None
    if tc.holdout:
        if tc.holdout >= len(y):
            raise TrainingError(
                f"train.holdout={tc.holdout} leaves no training data ({len(y)} examples)"
            )
        x, x_hold = x[: -tc.holdout], x[-tc.holdout :]
        y, y_hold = y[: -tc.holdout], y[-tc.holdout :]
    if tc.train_subset is not None:
        x, y = x[: tc.train_subset], y[: tc.train_subset]
    return Split(x, y, x_hold, y_hold)


def _load(spec: str, cfg: RunConfig, ds: Dataset, runs_dir: Path, device) -> LoadedModel:
    return load_model(
        spec,
        num_classes=ds.num_classes,
        dataset=cfg.dataset,
        runs_dir=runs_dir,
        download=cfg.download,
        device=device,
    )


def load_training_data(cfg: RunConfig) -> tuple[torch.device, Dataset, Split]:
    """The device, the dataset (which must have training arrays) and its training split."""
    device = check_device(cfg.device)
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download)
    if not ds.has_train:
        raise TrainingError(f"dataset {cfg.dataset!r} has no training arrays (x_train, y_train)")
    return device, ds, split_train(ds, cfg)


def load_frozen(
    what: str, spec: str, cfg: RunConfig, ds: Dataset, runs_dir: Path, images: Tensor
) -> LoadedModel:
    """A teacher-like network: loaded, frozen (eval mode, no gradients), checked on ``images``."""
    model = _load(spec, cfg, ds, runs_dir, images.device)
    freeze(model.module)
    check_model_fits(model.module, images, ds.max_label, f"{what} {spec!r}")
    return model


def first_test_points(
    cfg: RunConfig, ds: Dataset, device: torch.device, cap: int
) -> tuple[Tensor | None, Tensor | None]:
    """At most ``cap`` of the test points the run evaluates (the first ``eval.n_examples``),
    or (None, None) for a dataset without a test split."""
    if not ds.num_test:
        return None, None
    return ds.test_subset(min(cfg.eval.n_examples or ds.num_test, cap), device)


def make_probe(cfg: RunConfig, split: Split, device: torch.device) -> Probe | None:
    if split.x_hold is not None and split.y_hold is not None:
        x, y, where = split.x_hold, split.y_hold, f"holdout ({len(split.y_hold)} training examples)"
    elif cfg.train.probe:
        n = min(cfg.train.probe, len(split.y))
        x, y, where = split.x[:n], split.y[:n], f"the first {n} training examples"
    else:
        return None
    x = to_float01(x.to(device)).contiguous()
    return Probe(x, y.to(device), cfg.attack, seed=cfg.train.seed, split=where)


def make_loader(cfg: RunConfig, split: Split, device: torch.device) -> DeviceLoader:
    tc = cfg.train
    return DeviceLoader(
        split.x,
        split.y,
        batch_size=tc.batch_size,
        seed=tc.seed,
        augment=tc.augment,
        crop=tc.crop,
        flip=tc.flip,
        device=device,
    )


def run_teacher_checks(
    cfg: RunConfig,
    ds: Dataset,
    loader: DeviceLoader,
    networks: dict[str, LoadedModel],
    console: Console,
) -> dict[str, TeacherCheck]:
    """The teacher check of every frozen network, shown; under ``train.teacher_check:
    strict`` a failed one stops the run here (nothing written yet)."""
    if cfg.train.teacher_check == "skip" or not networks:
        return {}
    x_test, y_test = first_test_points(cfg, ds, loader.device, CHECK_POINTS)
    checks = {}
    for name, model in networks.items():
        check = check_teacher(
            model.module, loader, x_test, y_test, num_classes=ds.num_classes, name=name
        )
        checks[name] = check
        console.print(f"[dim]{check.summary()}[/]", highlight=False)
        for warning in check.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    failed = [w for c in checks.values() for w in c.warnings]
    if failed and cfg.train.teacher_check == "strict":
        raise TrainingError(
            "teacher check failed (train.teacher_check=strict): " + "; ".join(failed),
            hint="ardbench check-teacher SPEC --protocol P shows the figures; drop --strict "
            "to train anyway",
        )
    return checks


def teacher_check_alone(cfg: RunConfig, *, runs_dir: Path, n: int) -> TeacherCheck:
    """The teacher check of ``cfg.teacher`` for ``cfg``'s data and augmentation, without a
    run (``ardbench check-teacher``)."""
    if not cfg.teacher:
        raise TrainingError("no teacher to check", hint="name one: ardbench check-teacher SPEC")
    device, ds, split = load_training_data(cfg)
    images = to_float01(split.x[:2].to(device))
    teacher = load_frozen("teacher", cfg.teacher, cfg, ds, runs_dir, images)
    x_test, y_test = first_test_points(cfg, ds, device, n)
    return check_teacher(
        teacher.module,
        make_loader(cfg, split, device),
        x_test,
        y_test,
        num_classes=ds.num_classes,
        n=n,
    )


def prepare(cfg: RunConfig, *, runs_dir: Path, console: Console) -> RunParts:
    """Load and check everything the run needs; nothing is written."""
    device, ds, split = load_training_data(cfg)
    if cfg.checkpoint.rule == "best-on-holdout" and split.x_hold is None:
        raise TrainingError(
            "checkpoint.rule best-on-holdout selects on a held-out training slice",
            hint="set train.holdout=N (e.g. 1000)",
        )
    on_test = split.x_hold is None or cfg.checkpoint.rule == "best-on-holdout"
    if on_test and cfg.eval.n_examples is not None and cfg.eval.n_examples > ds.num_test:
        raise TrainingError(
            f"eval.n_examples={cfg.eval.n_examples}, but {cfg.dataset!r} has {ds.num_test} "
            "test points",
            hint=f"set eval.n_examples to at most {ds.num_test}",
        )
    swa_start = cfg.checkpoint.swa_start
    if cfg.checkpoint.rule == "swa" and swa_start is not None and swa_start >= cfg.train.epochs:
        raise TrainingError(
            f"checkpoint.swa_start={cfg.checkpoint.swa_start} is not before the last epoch "
            f"(train.epochs={cfg.train.epochs})"
        )
    method = build_method(cfg.method, cfg.method_config)
    torch.manual_seed(cfg.train.seed)  # student initialisation
    student = _load(cfg.student, cfg, ds, runs_dir, device)
    student.module.train()
    images = to_float01(split.x[:2].to(device))  # each network must take the data
    check_model_fits(student.module, images, ds.max_label, f"student {cfg.student!r}")
    teacher = None
    if type(method).needs_teacher:
        if not cfg.teacher:
            raise TrainingError(
                f"method {cfg.method!r} distils from a teacher",
                hint="pass --teacher SPEC (ARCH:PATH, PATH.safetensors, PATH.pt2, "
                "robustbench:ID, run:RUN_ID)",
            )
        teacher = load_frozen("teacher", cfg.teacher, cfg, ds, runs_dir, images)
    extras = {}
    for name, spec in method.extra_models().items():
        if not spec:
            raise TrainingError(
                f"method {cfg.method!r} needs the extra network {name!r} and its method_config "
                "names none",
                hint=f"set it as baselines/{cfg.method}/README.md says (a model spec)",
            )
        extras[name] = load_frozen(name, spec, cfg, ds, runs_dir, images)
    t_dim = None
    if teacher is not None:
        try:
            t_dim = feature_dim(teacher.module)
        except Exception:  # some archives expose no penultimate layer; only vargap needs it
            t_dim = None
    method.setup(
        student=student.module,
        teacher=teacher.module if teacher else None,
        num_classes=ds.num_classes,
        feature_dims=(feature_dim(student.module), t_dim),
        # a fresh network of the student's architecture (PeerAiD's peer), built as the
        # architecture initialises itself
        student_factory=lambda: build_arch(student.arch, num_classes=ds.num_classes).to(device),
    )
    method.to(device)
    student.module.train()
    plan = resolve_speed(cfg.train, device, method)
    loader = make_loader(cfg, split, device)
    frozen = {"teacher": teacher} if teacher is not None else {}
    checks = run_teacher_checks(cfg, ds, loader, {**frozen, **extras}, console)
    return RunParts(
        cfg=cfg,
        device=device,
        dataset=ds,
        split=split,
        method=method,
        student=student,
        teacher=teacher,
        extras=extras,
        plan=plan,
        probe=make_probe(cfg, split, device),
        loader=loader,
        teacher_checks=checks,
    )
