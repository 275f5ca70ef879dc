"""User errors: one base class, so the command line prints every one of them as one line.

A user error says what is wrong and how to fix it (``ardbench: error: <what> — <fix>``). Code
that finds bad input raises a subclass of :class:`ArdbenchError`; anything else that escapes is
a bug and is reported with a crash log.
"""

from __future__ import annotations


class ArdbenchError(Exception):
    """Bad input or a state the user can fix; ``hint`` says how (shown after an em dash)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} — {hint}")

    def __str__(self) -> str:  # plain, also for subclasses that mix in KeyError (which quotes)
        return str(self.args[0]) if self.args else ""


class ConfigError(ArdbenchError, ValueError):
    """A recipe, protocol or setting that cannot be applied; the message names the key."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (libraries' messages run over many lines)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
