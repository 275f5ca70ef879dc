"""A ``torch.export`` archive checked before torch reads it: no code from a model file.

``torch.export.load`` unpickles parts of a ``.pt2`` archive (falling back to a full, code-running
unpickler when the restricted one fails), loads AOTInductor shared libraries, evaluates
``sympy`` strings (``eval``) and ``exec``s the archive's guard code, and resolves the graph's
call targets by name. :func:`checked_archive` refuses, with one line naming the member, an
archive where any of these could run code:

- every member that torch may unpickle passes a restricted unpickler: a nested ``torch.save``
  archive must load with torch's weights-only unpickler; any other member is read, pickle by
  pickle, by an unpickler that resolves no global but a few harmless builtins and refuses
  persistent ids (so ``pickle.loads`` of it can build only plain data). Only raw tensor
  payloads (``data/weights/weight_N``, ``data/constants/tensor_N`` that every config torch
  reads names as non-pickled) are exempt: torch reads them as bytes;
- no compiled code (``data/aotinductor/``, shared libraries);
- in the graph (``models/*.json``): sympy expressions use only sympy's constructors, symbol
  names and numbers; guard code only compares input sizes; call targets are ``torch.ops.*``,
  a few ``_operator`` functions or ``math.*``.

Which member torch reads for a name is decided as its C++ zip reader decides it
(:mod:`.archive_names`: plain, case-insensitively unique names; raw payloads only where every
config torch reads names them raw). The members that passed are repacked into a fresh
in-memory zip, so torch reads exactly the bytes that were checked (no file swapped in between).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from ..errors import ArdbenchError, first_line
from .archive_names import NameRefused, archive_root, raw_tensor_members, relative

__all__ = ["ModelFileError", "UnsafeModelError", "checked_archive", "quiet_torch_export"]

TRUST_HINT = (
    "do not load it; if you trust its author, pass --trust-model (it may then run any code) "
    "or list its sha256 in ARDBENCH_TRUSTED_SHA256"
)
# uncompressed bytes a zip may declare per byte of archive (torch writes stored members)
_MAX_INFLATION = 20
_MIN_INFLATION_BYTES = 256 << 20


class ModelFileError(ArdbenchError, ValueError):
    """A model file that cannot be read as what its name says; the message names the file."""


class UnsafeModelError(ModelFileError):
    """A model archive refused because loading it could run code; names the member."""

    def __init__(self, message: str, *, hint: str | None = TRUST_HINT) -> None:
        super().__init__(message, hint=hint)


# ------------------------------------------------------------------------ pickles


class _Refused(Exception):
    pass


# builtins that construct plain values; nothing here reaches code, files or modules
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """The C unpickler (the parser ``pickle.loads`` uses), allowed to build plain data only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"imports {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refers to external objects (a persistent id: a legacy torch.save file)")


def _check_raw_pickles(blob: bytes) -> None:
    """Read every pickle in ``blob`` in turn (torch's legacy format is several in a row).

    Only a refused global or persistent id is an error: a stream that stops being a pickle
    (raw bytes, text, a truncated file) fails the real unpickler at the same opcode, and
    everything before it built plain data only.
    """
    stream = io.BytesIO(blob)
    while stream.tell() < len(blob):
        start = stream.tell()
        try:
            _DataOnlyUnpickler(stream).load()
        except _Refused:
            raise
        except Exception:  # not (or no longer) a pickle
            return
        if stream.tell() <= start:
            return


def _check_nested_torch_save(blob: bytes) -> None:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _Refused(f"is not a weights-only torch.save file ({first_line(exc)})") from None


def _check_member_pickles(blob: bytes) -> None:
    if blob[:4] == b"PK\x03\x04":  # torch.load's own test for its zip format
        _check_nested_torch_save(blob)
    else:
        _check_raw_pickles(blob)


# -------------------------------------------------------------------------- graph


@lru_cache(maxsize=1)
def _sympy_names() -> frozenset[str]:
    import sympy
    import torch.utils._sympy.functions as tfn
    from sympy.core.assumptions import _assume_defined

    names = {
        n
        for mod in (sympy, tfn)
        for n, v in vars(mod).items()
        if isinstance(v, type) and issubclass(v, sympy.Basic) and not n.startswith("_")
    }
    return frozenset(names | set(_assume_defined) | {"True", "False", "oo", "zoo", "nan"})


_QUOTED_NAME = re.compile(r"'[A-Za-z_][A-Za-z0-9_]*'")
_NUMBER = re.compile(r"(?<![A-Za-z_0-9])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOL = re.compile(r"[a-z]+\d+")
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_+\-*/%(),.<>=!&|~^ ]*")
_SIZE_ACCESS = re.compile(
    r"L\['[A-Za-z_][A-Za-z0-9_]*'\](?:\[\d+\])*"
    r"(?:\.(?:size|stride)\(\)\[\d+\]|\.storage_offset\(\)|\.dim\(\))"
)
_GUARD_WORDS = {"and", "or", "not", "True", "False"}
_SAFE_OPERATORS = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift",
    "rshift", "matmul",
}  # fmt: skip


def _safe_expression(text: str, extra_words: frozenset[str] | set[str] = frozenset()) -> bool:
    if len(text) > 20_000 or "__" in text:
        return False
    body = _NUMBER.sub("0", _QUOTED_NAME.sub("0", text))
    if not _EXPR_CHARS.fullmatch(body) or re.search(r"\.\s*[A-Za-z_]", body):
        return False  # a quote, bracket, colon... or an attribute access
    allowed = _sympy_names()
    return all(
        w in allowed or w in extra_words or _SYMBOL.fullmatch(w) for w in _IDENT.findall(body)
    )


def _safe_guard(text: str) -> bool:
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    body = re.sub(r"\bmath\.[a-z_]+\b", "f", _SIZE_ACCESS.sub("v", text))
    names = set(SYMPY_INTERP) - {"torch", "math"}
    return _safe_expression(body, _GUARD_WORDS | names | {"v", "f"})


def _safe_target(target: str) -> bool:
    if "__" in target:
        return False
    if target.startswith("torch.ops."):
        return bool(re.fullmatch(r"torch\.ops(\.[A-Za-z_][A-Za-z0-9_]*)+", target))
    head, _, name = target.partition(".")
    return (head == "_operator" and name in _SAFE_OPERATORS) or (
        head == "math" and bool(re.fullmatch(r"[a-z_][a-z0-9_]*", name))
    )


def _walk(obj: Any) -> Iterator[tuple[str, Any, dict]]:
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                yield k, v, cur
                stack.append(v)
        elif isinstance(cur, list):
            stack.extend(cur)


def _check_json(graph: Any) -> None:
    """The strings of a graph (any JSON member: torch reads every ``models/*`` as one)."""
    guards = graph.get("guards_code") if isinstance(graph, dict) else None
    for guard in guards if isinstance(guards, list) else []:
        if not isinstance(guard, str) or not _safe_guard(guard):
            raise _Refused(f"has guard code that is not a size comparison ({str(guard)[:80]!r})")
    for key, value, parent in _walk(graph):
        if key == "expr_str" and not (isinstance(value, str) and _safe_expression(value)):
            raise _Refused(f"has a symbolic expression that is not plain sympy ({value!r:.80})")
        if key == "target" and "inputs" in parent and "outputs" in parent:
            if not (isinstance(value, str) and _safe_target(value)):
                raise _Refused(f"calls {value!r:.80}, which is not a torch operator")


# ------------------------------------------------------------------------ archive


def _read_members(path: str, blob: bytes) -> tuple[str, dict[str, bytes]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise ModelFileError(
            f"{path} is not a torch.export archive: not a zip file ({first_line(exc)})",
            hint="a .pt2 is written by torch.export.save; the file may be truncated",
        ) from None
    infos = zf.infolist()
    declared = sum(i.file_size for i in infos)
    if declared > max(_MAX_INFLATION * len(blob), _MIN_INFLATION_BYTES):
        raise UnsafeModelError(
            f"{path}: its members unpack to {declared} bytes from {len(blob)} (a zip bomb?)"
        )
    try:
        root = archive_root(infos)
    except NameRefused as exc:
        raise UnsafeModelError(f"{path}: {exc}") from None
    members = {}
    for info in infos:
        rel = relative(info.filename, root).lower()
        if rel.startswith(("data/aotinductor/", "data/executorch/", "data/mtia")) or re.search(
            r"\.(so|dll|dylib|pyd)(\.\d+)*$", info.filename
        ):
            raise UnsafeModelError(
                f"{path}: member {info.filename!r} is compiled native code (AOTInductor)"
            )
        if info.is_dir():
            continue
        try:
            members[info.filename] = zf.read(info)
        except Exception as exc:
            raise ModelFileError(
                f"{path}: member {info.filename!r} cannot be read ({first_line(exc)})",
                hint="the archive is corrupt; export it again",
            ) from None
    return root, members


def checked_archive(path: str, blob: bytes) -> bytes:
    """``blob`` (the bytes of the ``.pt2`` at ``path``) checked and repacked, or an error."""
    root, members = _read_members(path, blob)
    try:
        raw = raw_tensor_members(members, root)
    except NameRefused as exc:
        raise UnsafeModelError(f"{path}: {exc}") from None
    for name, data in members.items():
        try:
            if name not in raw:
                _check_member_pickles(data)
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError):
                continue  # not JSON: torch reads no graph from it
            _check_json(parsed)
        except _Refused as exc:
            raise UnsafeModelError(f"{path}: member {name!r} {exc}") from None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[None]:
    """torch.export.load logs tracebacks and warns on stderr; the caller reports one line."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
