"""The one place that writes files: whole or not at all, and the one sha256 helper.

Every writer goes through :func:`atomic_write_bytes`: the bytes go to a temporary file in the
target directory (``.<name>.<random>.tmp``), are fsynced, and then either replace the target
(``os.replace``) or, with ``exclusive=True``, are hard-linked to it, which fails when the name
exists, so an immutable file (a record) is never overwritten, even by a concurrent writer.
The temporary file is removed on every exit path; while it exists its writer holds an advisory
lock on it, so :func:`remove_stale_tmp` removes only the temporary files of writers that died.
:func:`read_bounded` is the one reader of files that may come from strangers: regular files only
(never a FIFO, a device or a link to one), with a size limit.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .errors import ArdbenchError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: temporary files are judged by age only
    fcntl = None  # type: ignore[assignment]

TMP_SUFFIX = ".tmp"
# a temporary file younger than this is never removed (its writer may not hold the lock yet)
TMP_GRACE_S = 10.0
# without advisory locks, a temporary file is left alone for this long
TMP_UNLOCKED_AGE_S = 24 * 3600.0

# errno values of file systems without hard links: fall back to O_EXCL creation
_NO_LINK = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


def atomic_write_bytes(path: str | Path, blob: bytes, *, exclusive: bool = False) -> None:
    """Write ``blob`` to ``path`` atomically. ``exclusive``: never over an existing file
    (raises ``FileExistsError``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive and path.exists():
        raise FileExistsError(errno.EEXIST, "file exists", str(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        if fcntl is not None:  # held until the temporary name is gone: "being written"
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        if not exclusive:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                _create_exclusive(path, blob)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.close(fd)
    _fsync_dir(path.parent)


def _create_exclusive(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_bytes(data: Any, *, sort_keys: bool = True) -> bytes:
    """The project's JSON layout: indent 2, no NaN/inf, a final newline."""
    return (json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n").encode()


def write_json_atomic(path: str | Path, data: Any, *, sort_keys: bool = True) -> None:
    """``sort_keys=False`` keeps the caller's key order (RobustBench's model_info fields)."""
    atomic_write_bytes(path, json_bytes(data, sort_keys=sort_keys))


def write_text_atomic(path: str | Path, text: str, *, exclusive: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def save_torch_atomic(path: str | Path, obj: Any) -> None:
    import io as _io

    buf = _io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """One JSON line, flushed and fsynced (a kill can tear at most this line)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _abandoned(path: Path, now: float) -> bool:
    """A temporary file whose writer is gone: old enough and not locked by anyone."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    age = now - st.st_mtime
    if fcntl is None:
        return age > TMP_UNLOCKED_AGE_S
    if age < TMP_GRACE_S:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer holds it
    finally:
        os.close(fd)
    return True


def remove_stale_tmp(
    directory: str | Path, *, name: str | None = None, recursive: bool = False
) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write_bytes` left in ``directory``
    (``.<name>.<8 random characters>.tmp``): all of them, or only those of the file ``name``;
    ``recursive`` also in every folder below (a leaderboard's tables). A file that a live
    writer holds (its advisory lock) or that is younger than ``TMP_GRACE_S`` is kept."""
    removed: list[Path] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    pattern = re.compile(
        rf"\.{re.escape(name) if name else '.+'}\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}"
    )
    found = directory.rglob(f".*{TMP_SUFFIX}") if recursive else directory.glob(f".*{TMP_SUFFIX}")
    now = time.time()
    for p in found:
        if pattern.fullmatch(p.name) and _abandoned(p, now):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


# ------------------------------------------------------------------------ bounded reading

MAX_JSON_BYTES = 16 << 20  # a record, a config, a model.json: kilobytes in practice
MAX_JSON_DEPTH = 64


class UnreadableFileError(ArdbenchError, ValueError):
    """A file that is not a regular file, too large, not JSON or nested too deeply.
    ``reason`` says what without the path (callers word their own line)."""

    def __init__(self, path: str | Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.reason = reason


def read_bounded(path: str | Path, *, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (a symlink to one is fine), at most ``limit``.

    A FIFO, a device, a socket or a directory is refused without reading it (opened
    non-blocking, so a FIFO with no writer does not hang; checked with ``fstat`` after
    opening, so the file checked is the file read)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFileError(
                path, "not a regular file", hint="point at a file, not a pipe or a device"
            )
        if st.st_size > limit:
            raise UnreadableFileError(path, f"{st.st_size} bytes, over the {limit}-byte limit")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while read
                raise UnreadableFileError(path, f"over the {limit}-byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def json_depth_ok(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests at most ``max_depth`` brackets (strings skipped), in one pass
    without recursion, before any parser recurses into it."""
    depth, in_str, escaped = 0, False, False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_json_bounded(
    path: str | Path, *, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """A JSON file from anywhere (a run folder, a record, a sweep's config): a regular file,
    at most ``limit`` bytes, UTF-8, nested at most ``max_depth`` deep; else
    :class:`UnreadableFileError` (``ValueError``) naming the file."""
    try:
        text = read_bounded(path, limit=limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(path, f"not valid JSON ({exc})") from None
    if not json_depth_ok(text, max_depth):
        raise UnreadableFileError(path, f"JSON nested too deeply (over {max_depth} levels)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFileError(path, f"not valid JSON ({exc})") from None
