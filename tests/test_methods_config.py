"""What the Method base class does for every method: typed configs checked once (choices,
numeric bounds, finite numbers) before any work, the teacher rule, one setup signature."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

from ardbench.cli import main
from ardbench.errors import ConfigError
from ardbench.methods import (
    Fraction,
    Method,
    MethodConfig,
    NonNegative,
    Positive,
    SetupContext,
    build_method,
    get_method,
)
from ardbench.recipes import resolve_config
from ardbench.train.check import tiny_context, tiny_setup


@pytest.mark.parametrize(
    "method, key, value, allowed",
    [
        ("ard", "tau", 0, "> 0"),
        ("peeraid", "temperature", -1.0, "> 0"),
        ("kdiga", "rs_eps", -0.1, ">= 0"),
        ("mtard", "w_init", 1.5, "in [0, 1]"),
        ("igdm", "ramp_den", 0, ">= 1"),
        ("iad", "begin", -1, ">= 0"),
    ],
)
def test_bounds_fail_at_config_resolution(method, key, value, allowed):
    with pytest.raises(ConfigError) as info:
        resolve_config(method, recipe="demo", sets=[f"{key}={value}"])
    message = str(info.value)
    assert message.startswith(f"method_config of {method!r}.{key} must be {allowed}; got ")
    assert float(message.rsplit("got ", 1)[1]) == value and "\n" not in message


def test_a_bad_value_stops_the_dry_run_with_one_line(capsys):
    assert main(["run", "--method", "ard", "--recipe", "demo", "--set", "tau=0", "--dry-run"]) != 0
    err = capsys.readouterr().err.strip()
    assert err == "ardbench: error: method_config of 'ard'.tau must be > 0; got 0.0"


def test_choices_are_literal_types_checked_by_the_base():
    with pytest.raises(ConfigError, match=r"kl_reduction must be batchmean, mean_all, rslad"):
        build_method("rslad", {"kl_reduction": "sum"})
    cls = get_method("rslad").Config
    with pytest.raises(ConfigError, match=r"'rslad'\.teacher_dtype_c100 must be one of fp32, fp16"):
        cls(teacher_dtype_c100="bf16")  # direct construction is checked too
    with pytest.raises(ConfigError, match=r"'peeraid'\.student_adv_forwards"):
        get_method("peeraid").Config(student_adv_forwards=3)


def test_checks_across_keys_say_where():
    with pytest.raises(ConfigError, match=r"^method_config of 'iad': alpha1 \+ alpha2 must"):
        resolve_config("iad", recipe="demo", sets=["alpha1=0.8", "alpha2=0.5"])


def test_every_builtin_config_default_passes_its_own_checks():
    from ardbench.methods import METHODS

    for name in METHODS.names():
        cfg = METHODS.get(name).Config()
        assert type(cfg).from_dict(cfg.to_dict()) == cfg, name


@dataclass(frozen=True)
class _ToyConfig(MethodConfig):
    tau: Positive = 1.0
    weight: NonNegative = 0.5
    mix: Fraction | None = None
    mode: Literal["a", "b"] = "a"
    milestones: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:  # no super() call: the base's checks still run first
        if self.mode == "b" and self.mix is None:
            raise ConfigError("mode b needs mix")


class _Toy(Method[_ToyConfig]):
    """A toy method (no paper)."""

    needs_teacher = False

    def losses(self, student, teacher, batch, ctx):
        return {"ce": student(batch.x).sum() * self.config.weight}


def test_the_type_argument_is_the_config():
    assert _Toy.Config is _ToyConfig
    assert isinstance(_Toy().config, _ToyConfig)
    with pytest.raises(TypeError, match="expects _ToyConfig"):
        _Toy(MethodConfig())


def test_subclass_checks_run_after_the_base_checks():
    with pytest.raises(ConfigError, match=r"_ToyConfig\.tau must be > 0; got -2\.0"):
        _ToyConfig(tau=-2.0)
    with pytest.raises(ConfigError, match=r"mix must be in \[0, 1\]"):
        _ToyConfig(mix=2.0)
    with pytest.raises(ConfigError, match=r"must be a finite number"):
        _ToyConfig(weight=math.inf)
    with pytest.raises(ConfigError, match=r"must be a number"):
        _ToyConfig(tau="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^_ToyConfig: mode b needs mix$"):
        _ToyConfig(mode="b")
    with pytest.raises(ConfigError, match=r"^toy: mode b needs mix"):
        _ToyConfig.from_dict({"mode": "b"}, where="toy")
    assert _ToyConfig.from_dict({"mode": "b", "mix": "1/2"}).mix == 0.5


def test_a_nested_config_that_contradicts_the_type_argument_is_refused():
    with pytest.raises(TypeError, match="is not the type argument"):

        class _Bad(Method[_ToyConfig]):
            @dataclass(frozen=True)
            class Config(MethodConfig):
                pass


def test_needs_teacher_is_enforced_by_the_base():
    method, student, _teacher, extras, batch = tiny_setup("ard")
    ctx = tiny_context(student, 0, 10, extras)
    with pytest.raises(ConfigError, match="^ard needs a teacher — pass --teacher"):
        method.losses(student, None, batch, ctx)


def test_a_teacherless_method_gets_a_stand_in_that_refuses_calls():
    seen = []

    class _Peek(_Toy):
        def losses(self, student, teacher, batch, ctx):
            seen.append(teacher)
            return super().losses(student, teacher, batch, ctx)

    _method, student, _t, extras, batch = tiny_setup("natural")
    _Peek().losses(student, None, batch, tiny_context(student, 0, 10, extras))
    (stand_in,) = seen
    assert isinstance(stand_in, nn.Module)
    with pytest.raises(RuntimeError, match="needs_teacher = False but called the teacher"):
        stand_in(batch.x)


def test_one_setup_signature_reaches_build():
    got: list[SetupContext] = []

    class _Builds(_Toy):
        def build(self, ctx: SetupContext) -> None:
            got.append(ctx)
            self.proj = nn.Linear(*ctx.feature_dims[:1], 3)

    student = nn.Linear(4, 2)
    m = _Builds()
    m.setup(student=student, teacher=None, num_classes=2, feature_dims=(4, None))
    assert got[0].student is student and got[0].student_factory is None
    assert [p.shape for p in m.parameters()] == [torch.Size([3, 4]), torch.Size([3])]
