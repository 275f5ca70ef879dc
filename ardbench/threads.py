"""How many CPU threads torch uses: ``--threads N`` for ``run``, ``eval`` and ``sweep``.

torch starts one intra-op thread per *logical* CPU. On a machine shared with other jobs (or
with hyper-threads) that oversubscribes the cores: every thread waits for the others at each
parallel region, and a run can be many times slower than with fewer threads. The default here
is therefore ``OMP_NUM_THREADS`` when it is set (the user, a batch system or a sweep decided),
else the number of *physical* cores this process may run on.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ArdbenchError

__all__ = ["default_threads", "parse_threads", "physical_cores", "set_threads"]


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (Linux: ``/proc/cpuinfo``'s
    ``physical id``/``core id`` pairs of the allowed CPUs); elsewhere ``os.cpu_count()``."""
    allowed = _allowed_cpus()
    cores: set[tuple[str, str]] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" not in fields:
            continue
        if allowed is not None and int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    if cores:
        return len(cores)
    return len(allowed) if allowed else (os.cpu_count() or 1)


def parse_threads(value: str | int | None) -> int | None:
    """A thread count from a flag or the environment: a positive integer, or None."""
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ArdbenchError(
            f"thread count must be a positive integer, got {value!r}",
            hint="e.g. --threads 1 on a shared CPU",
        )
    return n


def default_threads() -> int:
    """``OMP_NUM_THREADS`` if set, else the physical cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return parse_threads(env) or 1
        except ArdbenchError:
            pass  # a malformed variable: fall back to the cores
    return physical_cores()


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (``None``: :func:`default_threads`); returns it."""
    import torch

    n = parse_threads(n) or default_threads()
    torch.set_num_threads(n)
    return n
