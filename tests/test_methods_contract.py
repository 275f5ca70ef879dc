"""The method contract over every registered method: a new method is tested automatically."""

from __future__ import annotations

import pytest

from ardbench.methods import METHODS
from ardbench.train.check import run_contract_checks


@pytest.mark.parametrize("name", METHODS.names())
def test_contract(name):
    results = run_contract_checks(name)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert len(results) >= 4


def test_contract_catches_a_broken_method():
    """A method that leaves the student in eval mode and returns a vector fails the checks."""
    from dataclasses import dataclass

    import torch.nn.functional as F

    from ardbench.methods import Method, MethodConfig, register_method
    from ardbench.methods.base import METHODS as REG

    @register_method("broken_for_test")
    class Broken(Method):
        """Deliberately broken (test only)."""

        needs_teacher = False

        @dataclass(frozen=True)
        class Config(MethodConfig):
            pass

        def losses(self, student, teacher, batch, ctx):
            student.eval()
            return {"ce_nat": F.cross_entropy(student(batch.x), batch.y, reduction="none")}

    try:
        results = run_contract_checks("broken_for_test")
        assert any(not r.passed and "0-dim" in r.detail for r in results)
    finally:
        REG._entries.pop("broken_for_test")
