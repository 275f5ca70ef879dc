"""EvalSpec: an evaluation's settings, typed and validated once on their way from the API and
the CLI to the evaluator; and train() sharing config()'s parameters."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import ardbench.api
from ardbench.errors import ConfigError
from ardbench.eval import EvalSpec, evaluate_model
from ardbench.eval import settings as eval_settings


def test_loose_values_become_typed_ones():
    spec = EvalSpec.create(attacks="aa,pgd, fgsm", eps="8/255", batch_size="64")
    assert spec.attacks == ("clean", "fgsm", "pgd20", "aa")  # registry order, clean first
    assert spec.eps == 8 / 255 and isinstance(spec.eps, float)
    assert spec.batch_size == 64
    with pytest.raises(ConfigError, match="unknown evaluation setting 'epsilon'"):
        EvalSpec.create(epsilon=0.1)
    with pytest.raises(ConfigError, match=r"eps = 8 is larger .* did you mean 8/255"):
        EvalSpec(eps=8)
    with pytest.raises(ConfigError, match="n_examples must be >= 1, got 0"):
        EvalSpec(n_examples=0)
    with pytest.raises(ConfigError, match="eps must be > 0, got 0.0{399}1"):
        EvalSpec.create(eps="1e-400")  # checked exactly, not as the float 0.0


def test_a_spec_and_loose_settings_together_are_an_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    x, y = torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="not both"):
        evaluate_model(model, x, y, EvalSpec(), eps=0.1)


def test_the_api_validates_the_settings_once(monkeypatch):
    calls = []
    real = eval_settings.EvalSpec.__post_init__

    def counting(self):
        calls.append(self)
        real(self)

    monkeypatch.setattr(eval_settings.EvalSpec, "__post_init__", counting)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    res = ardbench.api.evaluate(
        model, dataset="digits", eps="2/255", attacks="fgsm", n_examples=8, seed=1
    )
    assert len(calls) == 1
    assert list(res.accuracy) == ["clean", "fgsm"] and res.n_examples == 8


def test_train_shows_config_parameters_in_its_signature():
    train = inspect.signature(ardbench.api.train).parameters
    config = inspect.signature(ardbench.api.config).parameters
    shared = [n for n in config if n not in ("_default_method", "overrides")]
    assert list(train)[: len(shared)] == shared
    assert {"runs", "progress", "threads", "tensorboard", "console"} <= set(train)
    assert list(train)[-1] == "overrides"
    assert train["seed"].default is None and train["runs"].default == "runs"
