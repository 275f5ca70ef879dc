"""What a run shows while it trains: a live bar on a terminal, one line per epoch elsewhere.

Without a TTY (a log file, a batch job, CI) nothing redraws: each finished epoch prints one
line with its loss terms, the probe accuracies and an ETA. On a terminal a bar counts the
steps of the epoch (counting needs no tensor value, so it costs no synchronisation) and the
same line is printed when the epoch ends.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def epoch_line(label: str, epoch: int, total: int, row: dict[str, Any], eta_s: float) -> str:
    losses = " ".join(f"{k}={v:.4f}" for k, v in row.get("losses", {}).items())
    probe = row.get("probe") or {}
    acc = " ".join(f"{k}={100 * probe[k]:.1f}%" for k in ("clean", "pgd10") if k in probe)
    bits = [f"{label} epoch {epoch}/{total}", losses]
    if acc:
        bits.append(f"probe {acc}")
    bits.append(f"{row.get('epoch_time_s', 0):.1f}s")
    if epoch < total:
        bits.append(f"ETA {_fmt_time(eta_s)}")
    return " | ".join(b for b in bits if b)


class Reporter:
    """Progress of one run; ``live`` (a redrawn bar) only on a terminal."""

    def __init__(self, console: Console, label: str, total_epochs: int, enabled: bool = True):
        self.console = console
        self.label = label
        self.total = total_epochs
        self.enabled = enabled and not console.quiet
        self.live = self.enabled and console.is_terminal and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: Any = None
        self._epoch_times: list[float] = []

    def __enter__(self) -> Reporter:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, steps: int) -> None:
        self._t0 = time.perf_counter()
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                f"{self.label} epoch {epoch + 1}/{self.total}", total=steps
            )

    def step(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        self._epoch_times.append(time.perf_counter() - self._t0)
        recent = self._epoch_times[-3:]
        eta = sum(recent) / len(recent) * (self.total - epoch - 1)
        if self.enabled:
            self.console.print(
                epoch_line(self.label, epoch + 1, self.total, row, eta), highlight=False
            )
