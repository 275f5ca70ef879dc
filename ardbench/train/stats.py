"""An epoch's running loss sums and non-finite flags, kept on the device.

The training step never reads a tensor value on the host: on a GPU at the faithful batch a
read is a full synchronisation, and the CPU could never queue work ahead of the GPU. So the
step adds its (detached) loss terms into device tensors here, with in-place operations that
a CUDA graph can capture, and raises flags on the device when a loss term, a gradient or the
total is not finite, recording the first step where it happened. :meth:`EpochStats.read` is
the one host read, once per epoch (the trainer also reads a copy for progress on CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ArdbenchError


class NonFiniteError(ArdbenchError, FloatingPointError):
    """A loss term, a gradient or a weight stopped being finite; the last good checkpoint stays."""


@dataclass
class EpochSummary:
    """What an epoch's read gives: mean loss terms and diagnostics per example, and, if
    something was not finite, what and where (0-based step)."""

    losses: dict[str, float]
    diagnostics: dict[str, float]
    examples: int
    bad_terms: list[str] = field(default_factory=list)
    bad_grads: bool = False
    first_bad_step: int | None = None


class EpochStats:
    """Device-side sums of one epoch. ``add`` is called inside the step (no host read)."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.sums: dict[str, Tensor] = {}
        self.diag: dict[str, Tensor] = {}
        self.term_bad: dict[str, Tensor] = {}
        self.grad_bad = torch.zeros((), dtype=torch.float32, device=self.device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.step = torch.zeros((), dtype=torch.int64, device=self.device)  # 0-based, this epoch
        self.examples = 0  # batch sizes are known on the host

    def reset(self) -> None:
        """Zero in place (a captured step keeps writing to the same tensors)."""
        for t in (*self.sums.values(), *self.diag.values(), *self.term_bad.values()):
            t.zero_()
        self.grad_bad.zero_()
        self.first_bad.fill_(-1)
        self.step.zero_()
        self.examples = 0

    def _slot(self, table: dict[str, Tensor], key: str, dtype: torch.dtype) -> Tensor:
        slot = table.get(key)
        if slot is None:
            slot = table[key] = torch.zeros((), dtype=dtype, device=self.device)
        return slot

    def keys(self) -> frozenset[tuple[str, str]]:
        """The slots that exist (a captured step must not create one: its zero-fill would be
        part of the graph and reset the sum at every replay)."""
        tables = (("sums", self.sums), ("diag", self.diag), ("term_bad", self.term_bad))
        return frozenset((name, key) for name, table in tables for key in table)

    def count(self, batch_size: int) -> None:
        """A step was executed (eagerly or as a replay): host-side, outside any graph."""
        self.examples += batch_size

    def add(self, terms: dict[str, Tensor], batch_size: int) -> None:
        """Accumulate the step's terms (and their sum as ``loss``), weighted by batch size.
        Device-side only; the step's driver calls :meth:`count` once the step ran."""
        total = None
        for key, value in terms.items():
            v = value.detach().to(torch.float64)
            self._slot(self.sums, key, torch.float64).add_(v * batch_size)
            self._slot(self.term_bad, key, torch.bool).logical_or_(~torch.isfinite(v))
            total = v if total is None else total + v
        if total is not None:
            self._slot(self.sums, "loss", torch.float64).add_(total * batch_size)

    def check_grads(self, params: list[Tensor]) -> None:
        """Raise the gradient flag when a gradient is not finite: one fused kernel per device
        and dtype (the check GradScaler uses; it multiplies by 1, a no-op)."""
        groups: dict[tuple, list[Tensor]] = {}
        for p in params:
            if p.grad is not None:
                groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for (device, _), grads in groups.items():
            one = self._one(device)
            flag = self.grad_bad if device == self.device else torch.zeros_like(one)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, one)
            if flag is not self.grad_bad:
                self.grad_bad.add_(flag.to(self.device))

    def _one(self, device: torch.device) -> Tensor:
        cache = self.__dict__.setdefault("_ones", {})
        if device not in cache:
            cache[device] = torch.ones((), dtype=torch.float32, device=device)
        return cache[device]

    def end_step(self) -> None:
        """After the gradient check: remember the first step that went wrong, count the step."""
        bad = self.grad_bad > 0
        for flag in self.term_bad.values():
            bad = bad | flag
        self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), self.step, self.first_bad))
        self.step.add_(1)

    def log(self, key: str, value: Tensor | float, batch_size: int) -> None:
        """A method's diagnostic (``ctx.log``): averaged per example like the losses."""
        if isinstance(value, Tensor):
            value = value.detach().to(self.device, torch.float64)
        self._slot(self.diag, key, torch.float64).add_(value * batch_size)

    def read(self) -> EpochSummary:
        """The one host read: every value in one transfer."""
        keys_s, keys_d, keys_b = list(self.sums), list(self.diag), list(self.term_bad)
        parts = [self.sums[k] for k in keys_s] + [self.diag[k] for k in keys_d]
        parts += [self.term_bad[k].to(torch.float64) for k in keys_b]
        parts += [self.grad_bad.to(torch.float64), self.first_bad.to(torch.float64)]
        values = torch.stack(parts).cpu().numpy().tolist()  # numpy: not a Tensor method
        n = max(self.examples, 1)
        i = 0
        losses = {k: values[i + j] / n for j, k in enumerate(keys_s)}
        i += len(keys_s)
        diag = {k: values[i + j] / n for j, k in enumerate(keys_d)}
        i += len(keys_d)
        bad_terms = [k for j, k in enumerate(keys_b) if values[i + j] > 0]
        i += len(keys_b)
        grad_bad, first = values[i] > 0, int(values[i + 1])
        return EpochSummary(
            losses=losses,
            diagnostics=diag,
            examples=self.examples,
            bad_terms=bad_terms,
            bad_grads=grad_bad,
            first_bad_step=first if first >= 0 else None,
        )
