"""Moving a ``torch.export`` program to a device, on every torch the project allows.

``Module.to()`` on an exported module would miss the constants baked into its graph (a
``torch.ones(..., device="cpu")`` node, lifted tensor constants): torch's
``torch.export.passes.move_to_device_pass`` moves those too. That submodule is not imported by
``import torch.export`` (on torch 2.11 and 2.14.1 alike, ``torch.export.passes`` is an
AttributeError until someone imports it), so it is imported explicitly here; torch releases
without it get :func:`move_program_fallback`, the same steps on the program's public
``state_dict``/``constants`` dicts and graph nodes.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["move_program", "move_program_fallback"]


def move_program(program: Any, device: torch.device | str) -> Any:
    """``program`` (an ``ExportedProgram``) with its weights, constants and graph on ``device``."""
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:  # older torch: no such submodule
        return move_program_fallback(program, device)
    return move_to_device_pass(program, device)


def _to(value: Any, device: str) -> Any:
    if isinstance(value, torch.nn.Parameter):
        return torch.nn.Parameter(value.to(device), value.requires_grad)
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return value


def move_program_fallback(program: Any, device: torch.device | str) -> Any:
    """What ``move_to_device_pass`` does (torch 2.14.1's ``torch/export/passes``), for torches
    that lack it: weights, buffers and tensor constants moved (the ``state_dict`` and
    ``constants`` properties return the program's own dicts, updated in place), the graph's
    ``device=`` arguments and ``aten.to.device`` targets rewritten, node metadata moved."""
    device = str(torch.device(device))
    for table in (program.state_dict, getattr(program, "constants", {})):
        for key, value in list(table.items()):
            table[key] = _to(value, device)
    examples = getattr(program, "example_inputs", None)
    if examples is not None and hasattr(program, "_example_inputs"):
        args, kwargs = examples
        program._example_inputs = (
            torch.utils._pytree.tree_map(lambda v: _to(v, device), args),
            torch.utils._pytree.tree_map(lambda v: _to(v, device), kwargs),
        )
    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if "device" in node.kwargs:
                node.kwargs = {**node.kwargs, "device": device}
            if node.op == "call_function" and node.target is torch.ops.aten.to.device:
                node.args = (node.args[0], device, *node.args[2:])
            if "val" in node.meta:
                node.meta["val"] = torch.utils._pytree.tree_map(
                    lambda v: v.to(device) if isinstance(v, torch.Tensor) else v,
                    node.meta["val"],
                )
    if hasattr(program, "validate"):
        program.validate()
    return program
