"""Command line: a thin argparse layer; each subcommand calls one library function.

One error path: a user error (:class:`ardbench.errors.ArdbenchError`, or a file that cannot
be read or written) prints one line, ``ardbench: error: <what> — <how to fix>``, and exits 2
(a bad flag too); anything else is a bug: one line and the path of a crash log holding the
traceback (``--debug`` prints it instead), exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.markup import escape

from .. import __version__
from ..errors import ArdbenchError
from .analyze import add_analyze_parser
from .console import err_console
from .doctor import add_doctor_parser
from .evaluate import add_eval_parser
from .info import add_check_parser, add_list_parser
from .plot import add_plot_parser
from .results import add_compare_parser, add_leaderboard_parser
from .run import add_run_parser
from .site import add_site_parser
from .sweep import add_sweep_parser
from .teachers import add_check_teacher_parser
from .verify import add_submit_parser, add_verify_parser

# user errors: ardbench's own, and a file that cannot be read or written (missing, a folder,
# no permission, a full disk): the user can fix these
USER_ERRORS = (ArdbenchError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line like every other error (no usage block)."""

    def error(self, message: str) -> NoReturn:
        _error_line(f"{message} — see {self.prog} --help")
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already reported)
        return exc.code if isinstance(exc.code, int) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to say how to rerun a command
    try:
        with _trust(getattr(args, "trust_model", False)):
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        _error_line(str(exc) if not isinstance(exc, OSError) else _os_error(exc))
        return 2
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", "")
        err_console.print(
            "[yellow]interrupted[/]" + (f": {escape(hint)}" if hint else ""),
            soft_wrap=True,
            highlight=False,
        )
        return 130
    except Exception as exc:  # a bug: one line, the traceback in a file
        if getattr(args, "debug", False):
            raise
        log = _crash_log(exc)
        _error_line(
            f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            f" — this is a bug; the traceback is in {log} (--debug prints it)"
        )
        return 1


def _trust(enabled: bool) -> contextlib.AbstractContextManager[None]:
    if not enabled:
        return contextlib.nullcontext()
    from ..models.trust import trust_models  # imports torch: only when asked

    return trust_models()


def _os_error(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)


def _error_line(message: str) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    # a file name from a stranger may hold terminal escape sequences: show them, do not run them
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
    err_console.print(f"ardbench: error: {line}", markup=False, highlight=False, soft_wrap=True)


def _crash_log(exc: BaseException) -> Path:
    root = Path(os.environ.get("ARDBENCH_CACHE", Path.home() / ".cache" / "ardbench"))
    try:
        root = root / "crash"
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        root = Path(tempfile.gettempdir())
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"crash-{stamp}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path.write_text(f"ardbench {__version__}\nargv: {sys.argv}\n\n{text}", encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ardbench",
        description="Benchmark for adversarially robust knowledge distillation.",
    )
    parser.add_argument("--version", action="version", version=f"ardbench {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parser(sub)
    add_list_parser(sub)
    add_check_parser(sub)
    add_check_teacher_parser(sub)
    add_eval_parser(sub)
    add_leaderboard_parser(sub)
    add_compare_parser(sub)
    add_sweep_parser(sub)
    add_plot_parser(sub)
    add_analyze_parser(sub)
    add_site_parser(sub)
    add_doctor_parser(sub)
    add_verify_parser(sub)
    add_submit_parser(sub)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
