"""A rich progress bar for the evaluation's columns, or nothing when progress is off."""

from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    """One bar per column; every method is a no-op when ``enabled`` is False."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self._progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, description: str, total: int, completed: int) -> Any:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total, completed=completed)

    def advance(self, task: Any, n: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, n)

    def describe(self, task: Any, description: str) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, description=description)
