"""The one place that writes files: whole or not at all, and the one sha256 helper.

Every writer goes through :func:`atomic_write_bytes`: the bytes go to a temporary file in the
target directory (``.<name>.<random>.tmp``), are fsynced, and then either replace the target
(``os.replace``) or, with ``exclusive=True``, are hard-linked to it, which fails when the name
exists, so an immutable file (a record) is never overwritten, even by a concurrent writer.
The temporary file is removed on every exit path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

TMP_SUFFIX = ".tmp"

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
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
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


def remove_stale_tmp(
    directory: str | Path, *, name: str | None = None, recursive: bool = False
) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write_bytes` left in ``directory``
    (``.<name>.<8 random characters>.tmp``): all of them, or only those of the file ``name``;
    ``recursive`` also in every folder below (a leaderboard's tables)."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    pattern = re.compile(
        rf"\.{re.escape(name) if name else '.+'}\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}"
    )
    found = directory.rglob(f".*{TMP_SUFFIX}") if recursive else directory.glob(f".*{TMP_SUFFIX}")
    for p in found:
        if p.is_file() and pattern.fullmatch(p.name):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
