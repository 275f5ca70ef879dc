"""A ``.pt2`` teacher moves to another device on every torch the project allows (issue 14).

torch 2.11 (the GPU image) failed with ``torch.export.passes`` missing: the submodule is never
imported by ``import torch.export``. ``models.export_device`` imports it explicitly and falls
back to its own copy of the pass where the submodule does not exist, which is simulated here.
No GPU is needed: the "meta" device has the same placement rules (a tensor left on the CPU
fails when meta inputs arrive).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ardbench.models import load_model
from ardbench.models.export_device import move_program, move_program_fallback


class WithConstants(nn.Module):
    """Weights, a buffer, a lifted tensor constant and a device-pinned factory call."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("shift", torch.ones(2))
        self.const = torch.tensor([1.0, 2.0])

    def forward(self, x):
        return self.lin(x) + self.shift + torch.ones(2, device=x.device) + self.const


def program(dynamic_batch: bool = False):
    torch.manual_seed(0)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    return torch.export.export(WithConstants(), (torch.rand(4, 3),), dynamic_shapes=shapes)


def placement(ep) -> dict:
    """Where everything of a program lives: weights, constants, graph device arguments."""
    out = {f"state:{k}": str(v.device) for k, v in ep.state_dict.items()}
    out |= {f"const:{k}": str(v.device) for k, v in ep.constants.items()}
    out |= {
        f"node:{n.name}": str(n.kwargs["device"]) for n in ep.graph.nodes if "device" in n.kwargs
    }
    return out


@pytest.fixture
def no_passes(monkeypatch):
    """A torch without ``torch.export.passes`` (importing it raises ImportError)."""
    monkeypatch.delattr(torch.export, "passes", raising=False)
    monkeypatch.setitem(sys.modules, "torch.export.passes", None)
    with pytest.raises(ImportError):
        from torch.export.passes import move_to_device_pass  # noqa: F401


def test_move_program_uses_torch_pass_when_present():
    moved = move_program(program(), "meta")
    where = placement(moved)
    assert len(where) == 5 and set(where.values()) == {"meta"}, where
    out = moved.module()(torch.rand(4, 3, device="meta"))
    assert out.device.type == "meta"


def test_fallback_moves_what_torch_pass_moves(no_passes):
    moved = move_program(program(), "meta")  # the fallback: the submodule is gone
    where = placement(moved)
    assert len(where) == 5 and set(where.values()) == {"meta"}, where
    out = moved.module()(torch.rand(4, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 2)


def test_fallback_equals_torch_pass_on_cpu_round_trip():
    """Moving to the CPU (a no-op placement) keeps the computation: same outputs as the
    unmoved program; and the fallback's placement equals torch's own pass's."""
    x = torch.rand(4, 3)
    ref = program().module()(x)
    fallback = move_program_fallback(program(), "cpu")
    torch.testing.assert_close(fallback.module()(x), ref, rtol=0, atol=0)
    from torch.export.passes import move_to_device_pass

    assert placement(move_program_fallback(program(), "meta")) == placement(
        move_to_device_pass(program(), "meta")
    )


def test_pt2_archive_loads_onto_another_device_without_torch_passes(no_passes, tmp_path: Path):
    path = tmp_path / "m.pt2"
    torch.export.save(program(dynamic_batch=True), path)  # ardbench refuses a fixed batch
    loaded = load_model(str(path), device="meta")
    assert {p.device.type for p in loaded.module.parameters()} == {"meta"}
    assert loaded.module(torch.rand(4, 3, device="meta")).device.type == "meta"
