"""Where a record's checkpoint weights are, and whether they are the ones it names.

A record names its checkpoint by sha256: ``checkpoint.sha256`` (the run's ``model.pt``, a
weights-only torch file) and, for runs of this version on, ``checkpoint.weights.sha256`` (the
same tensors as ``model.safetensors``, the file to publish). A file is accepted only when its
sha256 equals the hash the record gives for its format; the first file found decides, so a
swapped file fails instead of being passed over for another.

Looked for, in order: an explicit ``--weights`` file; ``checkpoint.weights.path`` (relative
paths against the record's folder and its parents, then the working directory); a run
directory's ``model.safetensors`` / ``model.pt`` beside its ``record.json``;
``<run_id>.safetensors`` beside the record or ``weights/<run_id>.safetensors`` in a folder
above it (``leaderboard/weights/``, a submission bundle's ``weights/``); the record's own
``checkpoint.path`` when it exists here; and, only with ``download``, ``checkpoint.weights.url``
or ``checkpoint.url``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArdbenchError, first_line
from ..io import atomic_write_bytes, file_sha256
from ..paths import cache_dir

__all__ = ["Weights", "WeightsError", "find_weights", "load_weights"]

SAFETENSORS = ".safetensors"
_PARENTS = 4  # how far above the record ``weights/<run_id>.safetensors`` is looked for


class WeightsError(ArdbenchError):
    """The weights are missing or are not the ones the record names (one line)."""


@dataclass(frozen=True)
class Weights:
    path: Path
    sha256: str
    expected: str
    source: str  # how it was found: "--weights", "run directory", "weights/ folder", ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "expected_sha256": self.expected,
            "found_as": self.source,
            "matched": self.sha256 == self.expected,
        }


def _expected(checkpoint: Mapping[str, Any], path: Path) -> str | None:
    """The hash the record gives for a file of this format (None: it names none)."""
    if path.suffix == SAFETENSORS:
        weights = checkpoint.get("weights")
        return weights.get("sha256") if isinstance(weights, Mapping) else None
    return checkpoint.get("sha256")


def _candidates(
    record: Mapping[str, Any], record_path: Path, explicit: Path | None
) -> Iterator[tuple[Path, str]]:
    ckpt = record["checkpoint"]
    rid = record["run_id"]
    if explicit is not None:
        yield explicit, "--weights"
    folder = record_path.parent
    parents = [folder, *list(folder.parents)[:_PARENTS]]
    weights = ckpt.get("weights") if isinstance(ckpt.get("weights"), Mapping) else {}
    if weights.get("path"):
        rel = Path(weights["path"])
        for base in [*parents, Path.cwd()] if not rel.is_absolute() else [Path("/")]:
            yield base / rel, "checkpoint.weights.path"
    if record_path.name == "record.json":
        if weights.get("sha256"):
            yield folder / "model.safetensors", "run directory"
        yield folder / "model.pt", "run directory"
    yield folder / f"{rid}{SAFETENSORS}", "beside the record"
    for base in parents:
        for suffix in (SAFETENSORS, ".pt"):
            yield base / "weights" / f"{rid}{suffix}", f"{base / 'weights'}"
    if ckpt.get("path"):
        yield Path(ckpt["path"]), "checkpoint.path"


def find_weights(
    record: Mapping[str, Any],
    record_path: Path,
    *,
    weights: str | Path | None = None,
    download: bool = False,
) -> Weights:
    """The record's weights file, its hash checked; :class:`WeightsError` when none is found or
    the first one found is not the file the record names (nothing is loaded then)."""
    explicit = Path(weights) if weights is not None else None
    if explicit is not None and not explicit.is_file():
        raise WeightsError(f"--weights {explicit}: no such file")
    for path, source in _candidates(record, record_path, explicit):
        if not path.is_file():
            continue
        return _checked(record["checkpoint"], path, source)
    url = _url(record["checkpoint"])
    if url and download:
        return _checked(record["checkpoint"], _fetch(url), f"downloaded from {url}")
    hint = f" (it names {url}: pass --download to fetch it)" if url else ""
    raise WeightsError(
        f"weights missing: no file for run {record['run_id']} found beside the record, in a "
        f"weights/ folder above it or at its checkpoint path{hint}"
    )


def _checked(checkpoint: Mapping[str, Any], path: Path, source: str) -> Weights:
    expected = _expected(checkpoint, path)
    if not expected:
        raise WeightsError(
            f"weights {path}: the record names no sha256 for a {path.suffix or 'torch'} file, "
            "so it cannot be checked"
        )
    digest = file_sha256(path)
    if digest != expected:
        raise WeightsError(
            f"weights do not match: sha256 of {path} is {digest[:12]}…, the record names "
            f"{expected[:12]}… (swapped weights or an edited hash)"
        )
    return Weights(path, digest, expected, source)


def _url(checkpoint: Mapping[str, Any]) -> str | None:
    weights = checkpoint.get("weights")
    if isinstance(weights, Mapping) and weights.get("url"):
        return str(weights["url"])
    return str(checkpoint["url"]) if checkpoint.get("url") else None


def _fetch(url: str) -> Path:
    """Download ``url`` into the cache (https only); the caller checks the hash."""
    if not url.startswith("https://"):
        raise WeightsError(f"refusing to download {url}: only https:// URLs are fetched")
    name = url.rstrip("/").rsplit("/", 1)[-1] or "weights"
    suffix = SAFETENSORS if name.endswith(SAFETENSORS) else ".pt"
    dest = cache_dir() / "verify" / (Path(name).stem + suffix)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (https checked)
            blob = resp.read()
    except OSError as exc:
        raise WeightsError(f"could not download {url} ({first_line(exc)})") from None
    atomic_write_bytes(dest, blob)
    return dest


def load_weights(record: Mapping[str, Any], weights: Weights) -> Any:
    """The record's student architecture with ``weights`` loaded strictly (no code runs: a
    safetensors file, or a weights-only torch file), in eval mode on the CPU."""
    from ..models import build_arch, extract_state_dict, load_state_dict_strict
    from ..models.weights import read_weights

    arch = str(record["student"]["arch"])
    module = build_arch(arch, num_classes=int(record["track"]["num_classes"]))
    where = str(weights.path)
    state = extract_state_dict(read_weights(weights.path), where=where)
    load_state_dict_strict(module, state, where=where)
    return module.eval()
