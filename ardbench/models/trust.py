"""Which model archives may skip the safety checks: shipped hashes, a user list, or a flag.

A ``.pt2`` archive is checked before torch reads it (:mod:`ardbench.models.archive`), because
``torch.export.load`` can run code from it. An archive is *trusted*, and loaded without the
checks, when its sha256 is

- one of :data:`SHIPPED_SHA256` (the archives distributed with the project's data), or
- listed in ``$ARDBENCH_TRUSTED_SHA256`` (hashes separated by spaces, commas or newlines, or
  the path of a file of them, one per line, ``sha256sum`` output works; ``#`` starts a
  comment), or in ``<cache>/trusted_sha256.txt`` (same format);

or when the caller opted out with :func:`trust_models` (the command line's ``--trust-model``):
then any archive is loaded as torch loads it, code included.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError
from ..paths import cache_dir

TRUST_ENV = "ARDBENCH_TRUSTED_SHA256"
TRUST_FILE = "trusted_sha256.txt"

SHIPPED_SHA256 = {
    "7fece71f86cd9b599755c60d99e36541cc6a23f9757c956b8d637461e7ed1b6b": (
        "resnet2b_cifar10_linf2.pt2"
    ),
    "c9dc96cebb2597aaf8b880762aa28cd41d5efbd457efb295dfc69c5f6dec4477": (
        "resnet4b_cifar10_linf2.pt2"
    ),
}

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TRUST_ALL: contextvars.ContextVar[bool] = contextvars.ContextVar("trust_all", default=False)


@contextlib.contextmanager
def trust_models(enabled: bool = True) -> Iterator[None]:
    """Inside this block every model archive is loaded unchecked (``--trust-model``)."""
    token = _TRUST_ALL.set(enabled)
    try:
        yield
    finally:
        _TRUST_ALL.reset(token)


def trusting_all() -> bool:
    return _TRUST_ALL.get()


def _hashes_in_file(path: Path, where: str) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc.strerror})") from None
    out = set()
    for n, line in enumerate(text.splitlines(), 1):
        token = line.split("#", 1)[0].strip().split(maxsplit=1)
        if not token:
            continue
        if not _SHA256.fullmatch(token[0]):
            raise ConfigError(
                f"{where}: {path} line {n} does not start with a sha256 ({token[0][:70]!r})",
                hint="one 64-hex-digit hash per line",
            )
        out.add(token[0].lower())
    return out


def trusted_sha256() -> set[str]:
    """Every trusted hash: shipped, ``$ARDBENCH_TRUSTED_SHA256`` and the cache's list."""
    hashes = set(SHIPPED_SHA256)
    env = os.environ.get(TRUST_ENV, "").strip()
    for token in re.split(r"[\s,]+", env) if env else []:
        if _SHA256.fullmatch(token):
            hashes.add(token.lower())
        elif Path(token).expanduser().is_file():
            hashes |= _hashes_in_file(Path(token).expanduser(), TRUST_ENV)
        else:
            raise ConfigError(
                f"{TRUST_ENV}: {token[:70]!r} is neither a sha256 nor a file",
                hint="list 64-hex-digit hashes, or the path of a file of them",
            )
    listed = cache_dir() / TRUST_FILE
    if listed.is_file():
        hashes |= _hashes_in_file(listed, str(listed))
    return hashes


def is_trusted(sha256: str) -> bool:
    return trusting_all() or sha256.lower() in trusted_sha256()
