from __future__ import annotations

from importlib import metadata

import pytest

from ardbench.methods import METHODS, get_method
from ardbench.registry import Registry, UnknownNameError


def test_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.register("resnet18")(1)
    reg.register("mobilenetv2")(2)
    with pytest.raises(UnknownNameError, match="(?i:did you mean) 'resnet18'") as info:
        reg.get("resnet19")
    assert "mobilenetv2" in str(info.value)


def test_unknown_method_lists_known():
    with pytest.raises(
        UnknownNameError, match="(?i:did you mean) 'trades'.*(?i:known methods):.*pgd_at"
    ):
        get_method("trade")


def test_duplicate_registration_is_an_error():
    reg: Registry[object] = Registry("thing")

    class A: ...

    class B: ...

    reg.register("a")(A)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(B)


def test_names_must_be_snake_case():
    with pytest.raises(ValueError, match="snake_case"):
        Registry("thing").register("MyMethod")


def test_entry_points_are_loaded(monkeypatch):
    loaded = []

    class FakeEP:
        name = "fake"
        value = "fake_pkg:FakeMethod"

        def load(self):
            loaded.append(True)

    def fake_entry_points(group=None):
        return [FakeEP()] if group == "ardbench.methods" else []

    reg: Registry[object] = Registry("method", entry_point_group="ardbench.methods")
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg.names()
    assert loaded == [True]


def test_builtin_methods_registered():
    assert {"natural", "kd", "pgd_at", "trades"} <= set(METHODS.names())
