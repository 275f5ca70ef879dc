"""Counting host reads of tensor values: the probe behind "the step never reads a value".

A host read (``.item()``, ``.tolist()``, ``float(t)``, ``int(t)``, ``bool(t)`` — hence any
Python ``if`` on a tensor — and ``.numpy()``) waits for the device to finish everything queued
before it. :func:`count_host_reads` patches those entry points on ``torch.Tensor`` for the
duration of a block and counts the calls (with where they came from), so a test or
``ardbench check`` can assert that a training step, a method's ``losses()`` or its attack
objective makes none.

Those patches see only Python entry points. Synchronising operators called from C++ or
through other functions (``torch.equal``, ``x.nonzero()``, boolean-mask indexing, whose
output size depends on values, or ``torch.tensor(...)`` in the step: a host-to-device copy
that a CUDA capture refuses) are seen by a :class:`TorchDispatchMode` at the ATen level
(issue 27); an operator reached from a patched entry point is counted once, by its name.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")

# ATen operators that wait for the device or copy host data into a tensor
_SYNC_OPS = {
    "aten._local_scalar_dense": "_local_scalar_dense (a tensor value read as a number)",
    "aten.is_nonzero": "is_nonzero (a tensor used as a truth value)",
    "aten.equal": "torch.equal (a bool read on the host)",
    "aten.nonzero": "nonzero (its size depends on values)",
    "aten.masked_select": "masked_select (its size depends on values)",
    "aten.lift_fresh": "torch.tensor(...) from Python data (a host-to-device copy)",
}
_INDEX_OPS = ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_")


@dataclass
class HostReads:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (entry point, caller)

    @property
    def count(self) -> int:
        return len(self.calls)

    def describe(self, limit: int = 3) -> str:
        return "; ".join(f"{name} at {where}" for name, where in self.calls[:limit])


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno}"
    return "?"


def _bool_index(args: tuple) -> bool:
    """Indexing with a boolean mask (``x[mask]``): nonzero inside, a host read."""
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
    )


class _SyncProbe(TorchDispatchMode):
    """Counts the synchronising ATen operators (not those a patched entry point called)."""

    def __init__(self, seen: HostReads, depth: list[int]) -> None:
        super().__init__()
        self.seen, self.depth = seen, depth

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if not self.depth[0]:
            if name in _SYNC_OPS:
                self.seen.calls.append((_SYNC_OPS[name], _caller()))
            elif name in _INDEX_OPS and _bool_index(args):
                self.seen.calls.append(("boolean-mask indexing (nonzero)", _caller()))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_reads(dispatch: bool = True) -> Iterator[HostReads]:
    """Count host reads in the block. ``dispatch=False``: the Python entry points only (no
    dispatch mode, e.g. around torch.compile'd code)."""
    seen = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    depth = [0]  # inside a patched entry point: its ATen calls are that one read

    def wrap(name: str, fn):
        def patched(self, *args, **kwargs):
            if not depth[0]:
                seen.calls.append((name, _caller()))
            depth[0] += 1
            try:
                return fn(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return patched

    probe = _SyncProbe(seen, depth) if dispatch else contextlib.nullcontext()
    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        with probe:
            yield seen
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
