"""Counting host reads of tensor values: the probe behind "the step never reads a value".

A host read (``.item()``, ``.tolist()``, ``float(t)``, ``int(t)``, ``bool(t)`` — hence any
Python ``if`` on a tensor — and ``.numpy()``) waits for the device to finish everything queued
before it. :func:`count_host_reads` patches those entry points on ``torch.Tensor`` for the
duration of a block and counts the calls (with where they came from), so a test or
``ardbench check`` can assert that a training step, a method's ``losses()`` or its attack
objective makes none.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


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
        if "/torch/" not in frame.filename and not frame.filename.endswith("host_reads.py"):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


@contextlib.contextmanager
def count_host_reads() -> Iterator[HostReads]:
    seen = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, fn):
        def patched(self, *args, **kwargs):
            seen.calls.append((name, _caller()))
            return fn(self, *args, **kwargs)

        return patched

    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield seen
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
