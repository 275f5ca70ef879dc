"""The typed sections of a protocol and of a run: attack, train, eval, checkpoint.

Each section is a frozen dataclass that validates itself on construction, so a bad value (a
negative seed, ``eps: 8`` meaning 8.0, an unknown attack column) is rejected when the recipe is
resolved, before any run directory exists, with a message that names the key and the fix.
:func:`coerce` turns YAML / command-line values into the annotated types.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .columns import COLUMNS, identity_attacks
from .eps import Eps, format_eps, parse_number

RANDOM_STARTS = ("uniform", "gaussian_0.001", "none")
STUDENT_MODES = ("train", "eval")
NORMS = ("Linf", "L2")
LR_SCHEDULES = ("multistep", "cosine", "constant", "ard_as_coded", "piecewise_epoch_plus_one")
AMP_MODES = ("none", "bf16")
EVAL_COLUMNS = COLUMNS  # the registered columns (a live view): ardbench.protocols.columns
CHECKPOINT_RULES = ("last", "best-on-holdout", "swa")
CROP_PADDINGS = ("zero", "reflect", "none")  # how the pad-4 random crop fills the border
TEACHER_CHECKS = ("warn", "strict", "skip")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64 bits; seed + 1 must still fit


def check_seed(name: str, seed: object) -> None:
    """A seed is an int in [0, MAX_SEED]: checked before any work (a 70-bit seed would fail
    deep in torch)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{name} must be a whole number, got {seed!r:.40}")
    if seed < 0:
        raise ConfigError(f"{name} must be >= 0, got {seed}")
    if seed > MAX_SEED:
        shown = str(seed) if seed.bit_length() <= 96 else f"a {seed.bit_length()}-bit number"
        raise ConfigError(f"{name} must be at most 2**63 - 1 (64 bits), got {shown}")


AutoBool = typing.Literal["auto", True, False]
"""A speed switch: ``auto`` (resolved per device by ``ardbench.train.speed``), true or false."""

# TrainConfig keys that change how fast a run goes but not what it computes (equal losses and
# gradients to float tolerance: tests/test_train_speed.py). A run records what each resolved to.
# ``amp`` is *not* one of them: bf16 autocast changes the numerics.
SPEED_KEYS = (
    "channels_last",
    "compile",
    "fused_optimizer",
    "share_teacher",
    "cudnn_benchmark",
    "cuda_graph",
)

# train keys that never change what a run computes: the speed switches, the per-epoch probe
# (a measurement with its own random generator) and what a failed teacher check does; left out
# of every hash
RUN_OPTION_KEYS = (*SPEED_KEYS, "probe", "teacher_check")

# keys added after records existed, at the value that reproduces the older behaviour: dropped
# from every hash at that value, so older records and protocols keep their identities. The
# eval section's columns follow the same rule through the registry: a column registered
# ``later`` is left out of ``eval.attacks`` in every hash (ardbench.protocols.columns).
LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {"amp": "none", "crop": "zero", "flip": True},
    "eval": {},
}


def drop_later_defaults(section: str, values: dict[str, Any]) -> None:
    """Remove (in place) the keys of :data:`LATER_DEFAULTS` left at their old-behaviour value
    and the later columns from ``eval.attacks``; without augmentation the crop and flip keys
    mean nothing and are dropped too."""
    for key, default in LATER_DEFAULTS.get(section, {}).items():
        if key in values and values[key] == default:
            values.pop(key)
    if section == "train" and values.get("augment") is False:
        values.pop("crop", None)
        values.pop("flip", None)
    if section == "eval" and isinstance(values.get("attacks"), (list, tuple)):
        values["attacks"] = identity_attacks(values["attacks"])


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}{hint}")


def check_radius(key: str, eps: Eps, *, allow_zero: bool = False) -> None:
    """A radius or step is in (0, 1] for [0,1] images; ``8`` is almost always 8/255."""
    if eps < 0 or (eps == 0 and not allow_zero) or (eps > 0 and float(eps) == 0.0):
        raise ConfigError(f"{key} must be > 0, got {format_eps(eps)}", hint="e.g. 8/255")
    if eps > 1:
        guess = f"did you mean {format_eps(eps)}/255?" if eps.denominator == 1 else "e.g. 8/255"
        raise ConfigError(
            f"{key} = {format_eps(eps)} is larger than the whole [0,1] pixel range", hint=guess
        )


# how to give a positive value, for the keys a user sets most (issue 27: --epochs 0)
_POSITIVE_HINTS = {
    "train.epochs": "at least one: --epochs 1 (or --set train.epochs=1); to only evaluate a "
    "model, use ardbench eval",
    "train.batch_size": "e.g. --set train.batch_size=128",
    "train.lr": "e.g. --set train.lr=0.1",
    "train.train_subset": "a number of training examples, e.g. --set train.train_subset=256; "
    "leave it out for all of them",
    "eval.n_examples": "a number of test points, e.g. --set eval.n_examples=1000; leave it out "
    "for all of them",
}


def _positive(key: str, value: Any) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}", hint=_POSITIVE_HINTS.get(key))


@dataclass(frozen=True)
class AttackConfig:
    """The threat model (norm, eps) and the training attack (step, steps, start, BN mode)."""

    norm: str = "Linf"
    eps: Eps = Eps(8, 255)
    step: Eps = Eps(2, 255)
    steps: int = 10
    random_start: str = "uniform"
    clamp_start: bool = False  # clamp x + delta0 to [0,1] before the first gradient
    student_mode: str = "eval"  # student BatchNorm mode during the inner maximisation

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", Eps(self.eps))
        object.__setattr__(self, "step", Eps(self.step))
        _choice("attack.norm", self.norm, NORMS)
        _choice("attack.random_start", self.random_start, RANDOM_STARTS)
        _choice("attack.student_mode", self.student_mode, STUDENT_MODES)
        check_radius("attack.eps", self.eps)
        if self.steps < 0:
            raise ConfigError(f"attack.steps must be >= 0, got {self.steps}")
        check_radius("attack.step", self.step, allow_zero=self.steps == 0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    # multistep: lr * gamma^(number of milestones <= epoch); ard_as_coded: lr * gamma from the
    # first milestone on, never again (ARD's adjust_learning_rate bug); piecewise_epoch_plus_one:
    # IAD pre_train (0.1 / 0.01 / 0.001 at 50 % / 75 % of epochs, decided on epoch + 1);
    # cosine: per-epoch cosine from lr to 0; constant.
    lr_schedule: str = "multistep"
    milestones: tuple[int, ...] = (100, 150)
    gamma: float = 0.1
    # augmentation, on the device: a pad-4 random crop (its border ``crop``: zero fill as
    # torchvision's RandomCrop(32, padding=4), reflect, or none = no crop) and a horizontal flip
    # (p=0.5); ``augment: false`` turns both off. Feed a teacher what it was trained on: the
    # teacher check (``ardbench check-teacher``) measures it on exactly these inputs.
    augment: bool = True
    crop: str = "zero"
    flip: bool = True
    train_subset: int | None = None  # only the first N training examples (smoke runs)
    # hold the last N training examples out of training: the slice the best-on-holdout
    # checkpoint rule selects on, or (without that rule) where the final evaluation runs
    # instead of the test set (hyper-parameter selection never looks at the test set)
    holdout: int | None = None
    seed: int = 0
    deterministic: bool = False
    # clean and PGD-10 accuracy, once per epoch, on the held-out slice or else on this many
    # training images (0: off); for progress lines and curves, never for selection on test
    probe: int = 256
    # what a teacher whose accuracy on the students' inputs fails the check does before
    # training: warn (default), strict (an error, nothing written), skip (not measured)
    teacher_check: str = "warn"
    # Speed features that keep the computation (see ardbench/train/speed.py, SPEED_KEYS);
    # ``auto`` = on where it helps on CUDA, off on CPU (share_teacher: on everywhere).
    channels_last: AutoBool = "auto"  # NHWC weights and batches
    compile: AutoBool = "auto"  # torch.compile of student/teacher forwards (methods may opt out)
    fused_optimizer: AutoBool = "auto"  # SGD(fused=True)
    share_teacher: AutoBool = "auto"  # one teacher forward per input tensor and step (no-grad)
    cudnn_benchmark: AutoBool = "auto"  # cudnn autotuning (off when deterministic)
    cuda_graph: AutoBool = "auto"  # the whole step captured in one CUDA graph (CUDA only)
    # Numerics-changing, behind an explicit flag: bf16 autocast for the training step only
    # (attack and loss); evaluation always runs in fp32.
    amp: str = "none"

    def __post_init__(self) -> None:
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("train.amp", self.amp, AMP_MODES)
        _choice("train.crop", self.crop, CROP_PADDINGS)
        _choice("train.teacher_check", self.teacher_check, TEACHER_CHECKS)
        for key in SPEED_KEYS:
            value = getattr(self, key)
            if isinstance(value, str) and value.lower() in ("true", "false"):
                object.__setattr__(self, key, value.lower() == "true")
            elif value != "auto" and not isinstance(value, bool):
                raise ConfigError(f"train.{key} must be auto, true or false; got {value!r}")
        for key in ("epochs", "batch_size", "lr", "train_subset", "holdout"):
            _positive(f"train.{key}", getattr(self, key))
        if self.probe < 0:
            raise ConfigError(f"train.probe must be >= 0 (0: off), got {self.probe}")
        check_seed("train.seed", self.seed)
        if self.weight_decay < 0 or not 0 <= self.momentum < 1 or self.gamma <= 0:
            raise ConfigError(
                "train.weight_decay must be >= 0, train.momentum in [0, 1) and train.gamma > 0; "
                f"got {self.weight_decay}, {self.momentum}, {self.gamma}"
            )
        if any(m < 0 for m in self.milestones):
            raise ConfigError(f"train.milestones must be epochs >= 0, got {list(self.milestones)}")


@dataclass(frozen=True)
class EvalConfig:
    """End-of-run evaluation: the first ``n_examples`` test points in order (None = all)."""

    attacks: tuple[str, ...] = ("clean", "pgd20")
    n_examples: int | None = None
    eps: Eps | None = None  # None: the training attack's eps
    # clean/FGSM/PGD/CW batch: "auto" (256 on CPU, fitted to free GPU memory on CUDA) or N;
    # speed only (their random starts are per point), so not part of any hash
    batch_size: int | str = "auto"
    aa_batch_size: int = 256  # AutoAttack's batch: changes its result (per-batch random inits)

    def __post_init__(self) -> None:
        if self.eps is not None:
            object.__setattr__(self, "eps", Eps(self.eps))
            check_radius("eval.eps", self.eps)
        for name in self.attacks:
            _choice("eval.attacks", name, tuple(COLUMNS))
        if not self.attacks:
            raise ConfigError("eval.attacks is empty", hint="e.g. clean,pgd20")
        _positive("eval.n_examples", self.n_examples)
        bs = self.batch_size
        if isinstance(bs, str) and bs != "auto":
            try:
                object.__setattr__(self, "batch_size", int(bs))
            except ValueError:
                raise ConfigError(
                    f"eval.batch_size must be auto or an integer; got {bs!r}"
                ) from None
        if isinstance(self.batch_size, int) and self.batch_size < 1:
            raise ConfigError("eval.batch_size must be auto or >= 1")
        if self.aa_batch_size < 1:
            raise ConfigError("eval.aa_batch_size must be >= 1")


@dataclass(frozen=True)
class CheckpointConfig:
    """Which weights a run reports. ``last`` (the default): the last epoch. ``best-on-holdout``:
    also the epoch with the best PGD-10 accuracy on the held-out training slice
    (``train.holdout``), never on the test set. ``swa``: a stochastic weight average of the
    end-of-epoch students from epoch ``swa_start`` (0-based) on, BatchNorm statistics
    recomputed over the training set after each averaging step (PeerAiD, SAAD)."""

    rule: str = "last"
    swa_start: int | None = None

    def __post_init__(self) -> None:
        _choice("checkpoint.rule", self.rule, CHECKPOINT_RULES)
        if self.rule == "swa" and (self.swa_start is None or self.swa_start < 0):
            raise ConfigError("checkpoint.rule swa needs checkpoint.swa_start (a 0-based epoch)")


SECTIONS: dict[str, type] = {
    "attack": AttackConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
}


def section_dict(obj: Any) -> dict[str, Any]:
    """A section as JSON-ready values (radii as their canonical strings, tuples as lists)."""
    return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Eps):
        return format_eps(value)
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


# ------------------------------------------------------------------------------ coercion


def unknown_key(key: str, known: typing.Iterable[str], where: str) -> ConfigError:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(f"unknown key {key!r} in {where}", hint=hint)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` once per class: it evaluates every annotation string anew on
    each call, which made grouping a few dozen records take tens of seconds (read-only)."""
    return typing.get_type_hints(cls)


def coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type of ``cls.name``."""
    hints = _type_hints(cls)
    if name not in hints:
        raise unknown_key(name, hints, where)
    return _coerce_type(hints[name], value, f"{where}.{name}")


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {values!r}")
    return cls(**{k: coerce(cls, k, v, where) for k, v in values.items()})


def _coerce_type(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_i in inner[:-1]:  # e.g. int | str ("auto"): the first type that takes the value
            try:
                return _coerce_type(tp_i, value, key)
            except ConfigError:
                pass
        return _coerce_type(inner[-1], value, key)
    if origin is typing.Literal:
        for allowed in args:
            if value == allowed or (isinstance(value, str) and str(allowed).lower() == value):
                return allowed
        allowed = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
        raise ConfigError(f"{key} must be {allowed.replace(', false', ' or false')}; got {value!r}")
    if tp is Any:
        return value
    if tp is Eps:
        try:
            return Eps(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ConfigError(f"{key} expects an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            return parse_number(value)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} expects a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        return tuple(
            _coerce_type(args[0], v.strip() if isinstance(v, str) else v, key) for v in value
        )
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a mapping, got {value!r}")
        return dict(value)
    return value
