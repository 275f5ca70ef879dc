"""Run configuration: frozen dataclasses, strict recipe files, ``--set key=value`` overrides.

Resolution order (later wins): library defaults < the method's faithful protocol
(``Method.faithful``) < preset or recipe file < CLI flags (``--epochs`` ...) < ``--set``.
The resolved config is a plain dict saved with every run (``config.json``) and hashed into its
record; an unknown key anywhere is an error that names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override that cannot be applied; the message names the key and the fix."""


def parse_number(value: Any) -> float:
    """Accept 8/255, "8/255", 0.031 or "0.031"; fractions keep full float precision."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if "/" not in text:
                return float(text)
            num, den = text.split("/")
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        except (ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"expected a number like 0.031 or 8/255, got {value!r}") from exc
    raise ConfigError(f"expected a number, got {value!r}")


def format_eps(eps: float) -> str:
    """8/255-style string when eps is a whole number of 255ths, else the float."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:g}"


RANDOM_STARTS = ("uniform", "gaussian_0.001", "none")
STUDENT_MODES = ("train", "eval")
NORMS = ("Linf", "L2")
LR_SCHEDULES = ("multistep", "cosine", "constant", "ard_as_coded", "piecewise_epoch_plus_one")
AMP_MODES = ("none", "bf16")

AutoBool = typing.Literal["auto", True, False]
"""A speed switch: ``auto`` (resolved per device by ``ardbench.speed``), ``true`` or ``false``."""

# TrainConfig keys that change how fast a run goes but not what it computes (equal losses and
# gradients to float tolerance: tests/test_speed.py). A run records what each resolved to
# (record["hardware"]["speed"], log.jsonl "speed"). ``amp`` is *not* one of them: bf16 autocast
# changes the numerics.
SPEED_KEYS = ("channels_last", "compile", "fused_optimizer", "share_teacher", "cudnn_benchmark")


@dataclass(frozen=True)
class AttackConfig:
    """The training-time threat model (the evaluator has its own fixed columns)."""

    norm: str = "Linf"
    eps: float = 8 / 255
    step: float = 2 / 255
    steps: int = 10
    random_start: str = "uniform"
    clamp_start: bool = False  # clamp x + delta0 to [0,1] before the first gradient
    student_mode: str = "eval"  # student BatchNorm mode during the inner maximisation

    def __post_init__(self) -> None:
        _choice("attack.norm", self.norm, NORMS)
        _choice("attack.random_start", self.random_start, RANDOM_STARTS)
        _choice("attack.student_mode", self.student_mode, STUDENT_MODES)
        if self.eps < 0 or self.step < 0 or self.steps < 0:
            raise ConfigError("attack.eps, attack.step and attack.steps must be >= 0")


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
    augment: bool = True  # pad-4 random crop + horizontal flip, on the device
    train_subset: int | None = None  # only the first N training examples (smoke runs)
    # hold the last N training examples out of training and run the final evaluation on them
    # instead of the test set (hyper-parameter selection never looks at the test set)
    holdout: int | None = None
    seed: int = 0
    deterministic: bool = False
    # Speed features that keep the computation (see ardbench/train/speed.py and SPEED_KEYS); ``auto``
    # = on where it helps on CUDA, off on CPU (share_teacher: on everywhere).
    channels_last: AutoBool = "auto"  # NHWC weights and batches
    compile: AutoBool = "auto"  # torch.compile of student/teacher forwards (methods may opt out)
    fused_optimizer: AutoBool = "auto"  # SGD(fused=True)
    share_teacher: AutoBool = "auto"  # one teacher forward per input tensor and step (no-grad)
    cudnn_benchmark: AutoBool = "auto"  # cudnn autotuning (off when deterministic)
    # Numerics-changing, behind an explicit flag: bf16 autocast for the training step only
    # (attack and loss); evaluation always runs in fp32.
    amp: str = "none"

    def __post_init__(self) -> None:
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("train.amp", self.amp, AMP_MODES)
        for key in SPEED_KEYS:
            value = getattr(self, key)
            if isinstance(value, str) and value.lower() in ("true", "false"):
                object.__setattr__(self, key, value.lower() == "true")
            elif value != "auto" and not isinstance(value, bool):
                raise ConfigError(f"train.{key} must be auto, true or false; got {value!r}")
        if self.epochs < 1:
            raise ConfigError("train.epochs must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """End-of-run evaluation: the first ``n_examples`` test points in order (None = all)."""

    attacks: tuple[str, ...] = ("clean", "pgd20")
    n_examples: int | None = None
    eps: float | None = None  # None: the training attack's eps
    # clean/FGSM/PGD/CW batch: "auto" (256 on CPU, fitted to free GPU memory on CUDA) or N;
    # speed only (their random starts are per point), so not part of the config hash
    batch_size: int | str = "auto"
    aa_batch_size: int = 256  # AutoAttack's batch: changes its result (per-batch random inits)

    def __post_init__(self) -> None:
        bs = self.batch_size
        if isinstance(bs, str) and bs != "auto":
            try:
                object.__setattr__(self, "batch_size", int(bs))
            except ValueError:
                raise ConfigError(
                    f"eval.batch_size must be auto or an integer; got {bs!r}"
                ) from None
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ConfigError("eval.batch_size must be auto or >= 1")
        if self.aa_batch_size < 1:
            raise ConfigError("eval.aa_batch_size must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    method: str
    method_config: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    teacher: str | None = None
    student: str = "resnet18"
    attack: AttackConfig = field(default_factory=AttackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    recipe: str | None = None  # provenance: preset or recipe file that produced this config
    paper: dict[str, Any] | None = None  # paper-reported numbers this recipe reproduces

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def config_hash(self) -> str:
        """sha256 over the computation-defining part (provenance fields excluded)."""
        d = computation_dict(self.to_dict())
        for k in ("recipe", "paper", "data_dir", "download", "device"):
            d.pop(k, None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def computation_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without what cannot change the numbers, for hashing: the speed
    features that keep the computation (SPEED_KEYS; ``amp: none``; ``eval.batch_size``, whose
    columns draw their random starts per point) and section keys left at
    None (so an optional key added in a later version hashes like its absence)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    for section in SECTIONS:
        sub = out.get(section)
        if isinstance(sub, dict):
            for key in SPEED_KEYS:
                sub.pop(key, None)
            if section == "eval":
                sub.pop("batch_size", None)
            if sub.get("amp") == "none":
                sub.pop("amp")
            for key in [k for k, v in sub.items() if v is None]:
                sub.pop(key)
    return out


SECTIONS: dict[str, type] = {"attack": AttackConfig, "train": TrainConfig, "eval": EvalConfig}


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _unknown(key: str, known: typing.Iterable[str], where: str) -> ConfigError:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {where}.{hint} Known keys: {', '.join(known)}.")


def coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type of ``cls.name``."""
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise _unknown(name, hints, where)
    return _coerce_type(hints[name], value, f"{where}.{name}")


def _coerce_type(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for tp_i in inner[:-1]:  # e.g. int | str ("auto"): the first type that takes the value
            try:
                return _coerce_type(tp_i, value, key)
            except ConfigError:
                pass
        return _coerce_type(inner[-1], value, key)
    if tp is Any:
        return value
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


def _parse_scalar(text: str) -> Any:
    """A --set value: YAML scalar/list syntax, with 8/255 kept as a string for number fields."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge (sections and method_config merge; scalars replace)."""
    out = dict(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


TOP_LEVEL = {f.name for f in dataclasses.fields(RunConfig)}


def validate_layer(layer: dict[str, Any], where: str) -> None:
    """Reject unknown keys in a recipe/preset layer before merging (method_config is checked
    against the method's own Config when the run is built)."""
    for key, value in layer.items():
        if key not in TOP_LEVEL:
            raise _unknown(key, TOP_LEVEL, where)
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a mapping of keys, got {value!r}")
            for sub in value:
                coerce(SECTIONS[key], sub, value[sub], f"{where}: {key}")


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping at the top level")
    validate_layer(data, f"recipe {path}")
    return data


def parse_set(items: typing.Iterable[str], method_config_keys: typing.Iterable[str] = ()) -> dict:
    """``--set train.epochs=5 --set adv_weight=0.5`` -> nested dict.

    A dotted key names its section (attack, train, eval, method_config). A bare key is a
    top-level field if there is one, else the one section that has it; ambiguous bare keys are
    errors that list the dotted spellings.
    """
    method_keys = set(method_config_keys)
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = _parse_scalar(raw)
        if "." in key:
            section, sub = key.split(".", 1)
            if section not in (*SECTIONS, "method_config"):
                raise _unknown(section, (*SECTIONS, "method_config"), "--set sections")
        elif key in TOP_LEVEL and key not in SECTIONS:
            out[key] = value
            continue
        else:
            homes = [s for s, cls in SECTIONS.items() if key in typing.get_type_hints(cls)]
            if key in method_keys:
                homes.append("method_config")
            if not homes:
                known = set(TOP_LEVEL) | method_keys
                for cls in SECTIONS.values():
                    known |= set(typing.get_type_hints(cls))
                raise _unknown(key, known, "--set")
            if len(homes) > 1:
                raise ConfigError(
                    f"--set {key} is ambiguous: write one of {', '.join(h + '.' + key for h in homes)}"
                )
            section, sub = homes[0], key
        out.setdefault(section, {})[sub] = value
    return out


def build_run_config(layer: dict[str, Any]) -> RunConfig:
    """Fully merged dict -> RunConfig (strict)."""
    validate_layer(layer, "run config")
    if "method" not in layer:
        raise ConfigError("no method given: pass --method NAME (ardbench list methods)")
    kwargs: dict[str, Any] = {}
    for key, value in layer.items():
        if key in SECTIONS:
            cls = SECTIONS[key]
            sub = {k: coerce(cls, k, v, key) for k, v in value.items()}
            kwargs[key] = cls(**sub)
        else:
            kwargs[key] = coerce(RunConfig, key, value, "run config")
    return RunConfig(**kwargs)


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of RunConfig.to_dict (used by --resume and run:ID)."""
    return build_run_config(d)
