"""Member names of a ``.pt2`` decided exactly as torch's zip reader will resolve them.

torch reads an archive with its C++ ``PyTorchStreamReader`` (miniz). A record name is prefixed
with the folder of the archive's first member and looked up byte for byte, with ASCII case
ignored (``weight_0`` finds ``WEIGHT_0``), no path normalisation (``./``, ``..``, ``\\`` are
literal) and a NUL ending the name; of two equal names it returns one (the later). Python's
``zipfile`` sees names differently (cp437 or UTF-8 decoding, NUL truncation, exact case).

So an archive is refused unless every member name is plain ASCII (letters, digits, ``_.-``,
``/`` between non-empty segments that are not ``.`` or ``..``), shorter than miniz's 512-byte
limit, under the one root folder, and unique with case ignored: then every name torch asks
for resolves to at most one member, the one whose lower-cased name equals it. The configs
torch reads (``data/<kind>/<model>_<kind>_config.json`` for each ``models/<model>.json``) are
found as torch finds them, and each ``path_name`` must be a plain file name; a tensor payload
is read as raw bytes (exempt from the pickle check) only if every reference torch will make
to it is a raw one.
"""

from __future__ import annotations

import json
import re
import zipfile
from typing import Any

__all__ = ["NameRefused", "archive_root", "raw_tensor_members", "relative"]

_SEGMENT = r"[A-Za-z0-9_.\-]+"
_PLAIN_MEMBER = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*/?")
_PLAIN_PATH_NAME = re.compile(r"[A-Za-z0-9_]{1,200}")
_RAW_MEMBER = re.compile(r"data/(weights|constants)/(weight|tensor)_\d+")
_MINIZ_MAX_NAME = 511  # MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE (512) less the C string's NUL


class NameRefused(Exception):
    """A member or config name torch could resolve differently from this check."""


def _plain_member(name: str) -> bool:
    if not _PLAIN_MEMBER.fullmatch(name) or len(name) > _MINIZ_MAX_NAME:
        return False
    return not any(seg in (".", "..") for seg in name.rstrip("/").split("/"))


def archive_root(infos: list[zipfile.ZipInfo]) -> str:
    """The folder every member is in (torch's ``archive_name``); refuses names torch could
    resolve to another member than this check does."""
    if not infos:
        raise NameRefused("the archive has no members")
    seen: dict[str, str] = {}
    first = infos[0].orig_filename
    # no folder: torch's reader refuses it and torch.export.load falls back to its legacy
    # reader (Python's zipfile, exact names), which reads no raw payloads
    root = first.split("/", 1)[0] if "/" in first else ""
    for info in infos:
        name = info.orig_filename  # the stored name, before zipfile's NUL/separator edits
        if not _plain_member(name):
            raise NameRefused(
                f"member {name!r:.120} is not a plain name (letters, digits, '_.-' and '/'"
                " between folders, no '.' or '..')"
            )
        if root and not name.startswith(root + "/"):
            raise NameRefused(f"member {name!r} is outside the archive's folder {root!r}")
        if info.is_dir():
            continue
        key = name.lower()  # miniz compares names with ASCII case ignored
        if key in seen:
            same = "" if seen[key] == name else f" (as {seen[key]!r}: torch ignores case)"
            raise NameRefused(f"member {name!r} appears more than once{same}")
        seen[key] = name
    return root


def relative(name: str, root: str) -> str:
    """``name`` as torch lists it (without the root folder)."""
    return name[len(root) + 1 :] if root else name


def _config(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name].decode())  # as torch: UTF-8, then json
    except (ValueError, RecursionError):
        return None


def _references(members: dict[str, bytes], root: str) -> tuple[set[str], set[str]] | None:
    """Lower-cased members torch reads raw and members it unpickles, from the configs it
    reads; None where a config cannot be read the way torch would read it."""
    raw: set[str] = set()
    pickled: set[str] = set()
    for full in members:
        rel = relative(full, root)
        if not rel.startswith("models/"):
            continue
        model = rel[len("models/") : -len(".json")]  # torch slices so, whatever the suffix
        for kind in ("weights", "constants"):
            config_name = f"{root}/data/{kind}/{model}_{kind}_config.json"
            if config_name not in members:  # torch lists names exactly before reading one
                continue
            config = _config(members, config_name)
            entries = config.get("config") if isinstance(config, dict) else None
            if not isinstance(entries, dict):
                return None
            for meta in entries.values():
                path_name = meta.get("path_name") if isinstance(meta, dict) else None
                if not isinstance(path_name, str):
                    return None
                if not _PLAIN_PATH_NAME.fullmatch(path_name):
                    raise NameRefused(
                        f"member {config_name!r} names {path_name!r:.80}, not a plain file name"
                    )
                as_raw = meta.get("use_pickle") is False and (
                    kind == "weights" or path_name.startswith("tensor_")
                )
                key = f"{root}/data/{kind}/{path_name}".lower()
                (raw if as_raw else pickled).add(key)
    return raw, pickled


def raw_tensor_members(members: dict[str, bytes], root: str) -> set[str]:
    """Members torch reads only as raw tensor bytes (never unpickles): exempt from the
    pickle check. Names must have passed :func:`archive_root`."""
    refs = _references(members, root) if root else None
    if refs is None:
        return set()  # torch fails on that config too; check every member
    raw, pickled = refs
    return {
        name
        for name in members
        if _RAW_MEMBER.fullmatch(relative(name, root)) and name.lower() in raw - pickled
    }
