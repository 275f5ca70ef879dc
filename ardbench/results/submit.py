"""``ardbench submit RUN_DIR... --out BUNDLE``: what a pull request to the leaderboard needs, in
one folder, with a manifest of sha256s.

Layout (paths as they go into the repository: ``records/`` files to ``leaderboard/runs/``
through ``ardbench leaderboard --add``, ``weights/`` to ``leaderboard/weights/``)::

    BUNDLE/manifest.json                 every other file with its sha256 and size
    BUNDLE/records/<run_id>.json         each run's record, byte for byte
    BUNDLE/weights/<run_id>.safetensors  its checkpoint's weights (hash checked against the
                                         record before packing; ``.pt`` for a record that names
                                         only its ``model.pt``)
    BUNDLE/logs/<run_id>.log.jsonl       its epoch log, when the run has one
    BUNDLE/method/<folder>/...           a contrib method's folder (source and recipes)
    BUNDLE/recipes/<name>                a recipe file the run named, when outside that folder

Nothing is evaluated here (``ardbench verify BUNDLE/records/...`` or ``leaderboard --add`` does
that); a run whose weights are missing or do not match its record is refused.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ArdbenchError
from ..io import file_sha256, write_json_atomic
from .records import RECORD_FILENAME, load_record
from .verify import record_json
from .weights import find_weights

__all__ = ["MANIFEST", "add_verified", "check_bundle", "make_bundle"]

MANIFEST = "manifest.json"


def _method_folder(rec: dict[str, Any]) -> Path | None:
    """A contrib method's folder (its source and recipes); None for a built-in method."""
    from ..methods import get_method
    from .provenance import method_source_files

    found = method_source_files(get_method(rec["method"]["name"]))
    if found is None or found[0].is_file():  # a built-in: the module file itself
        return None
    return found[0]


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def make_bundle(run_dirs: Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Pack the runs into ``out`` (a new or empty folder); returns the manifest."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArdbenchError(f"--out {out} exists and is not an empty folder", hint="name a new one")
    plan: list[tuple[Path, str]] = []  # (source file, path in the bundle)
    runs = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        path = run_dir / RECORD_FILENAME if run_dir.is_dir() else run_dir
        rec = record_json(load_record(path))
        rid = rec["run_id"]
        weights = find_weights(rec, path)  # refuses missing or mismatched weights
        plan.append((path, f"records/{rid}.json"))
        plan.append((weights.path, f"weights/{rid}{weights.path.suffix}"))
        log = path.parent / "log.jsonl"
        if path.name == RECORD_FILENAME and log.is_file():
            plan.append((log, f"logs/{rid}.log.jsonl"))
        folder = _method_folder(rec)
        if folder is not None:
            for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = f.relative_to(folder)
                if "__pycache__" not in rel.parts:
                    plan.append((f, f"method/{folder.name}/{rel.as_posix()}"))
        recipe = Path(str(rec.get("recipe") or ""))
        if recipe.suffix in (".yaml", ".yml") and recipe.is_file():
            if folder is None or folder not in recipe.resolve().parents:
                plan.append((recipe, f"recipes/{recipe.name}"))
        runs.append({"run_id": rid, "method": rec["method"]["name"], "weights": weights.sha256})
    files: dict[str, dict[str, Any]] = {}
    for src, name in plan:
        if name in files:
            continue
        _copy(src, out / name)
        files[name] = {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size}
    manifest = {"format": "ardbench-submission/1", "runs": runs, "files": files}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def check_bundle(bundle: str | Path) -> list[str]:
    """The problems of a bundle against its manifest (missing, changed or unlisted files)."""
    import json

    bundle = Path(bundle)
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    listed = manifest.get("files") or {}
    problems = []
    for rel, info in sorted(listed.items()):
        f = bundle / rel
        if not f.is_file():
            problems.append(f"{rel}: listed in the manifest but missing")
        elif file_sha256(f) != info.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest's")
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = f.relative_to(bundle).as_posix()
        if rel != MANIFEST and rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return problems


def add_verified(
    sources: Iterable[str | Path],
    runs_dir: str | Path,
    *,
    verify: bool = True,
    columns: list[str] | None = None,
    n: int | None = None,
    data_dir: str | None = None,
    replaces: Sequence[str | Path] = (),
) -> list[tuple[Path, str, dict[str, Any]]]:
    """``leaderboard --add`` with verification: every source is re-evaluated first (default:
    the deterministic columns it has, on all its points; AutoAttack is left out as too slow
    on a CPU) and nothing is added when one fails. Each added record gets its verification
    result beside it and its weights in ``<runs_dir>/../weights/``. ``verify=False`` adds
    without re-evaluation and files ``state: unverified`` saying so. ``replaces`` pairs each
    source with a committed record it re-runs (:mod:`.replace`)."""
    from .leaderboard import add_records
    from .replace import check_replacement, remove_replaced, replacement_block
    from .verify import DETERMINISTIC, FAILED, portable_path, verify_path, verify_result_path

    runs_dir = Path(runs_dir)
    paths = [Path(s) for s in sources]
    if replaces and len(replaces) != len(paths):
        raise ArdbenchError(
            f"--replaces names {len(replaces)} record(s) for {len(paths)} added: give one each"
        )
    checks = []
    olds: list[dict[str, Any] | None] = []
    for i, src in enumerate(paths):
        path = src / RECORD_FILENAME if src.is_dir() else src
        rec = record_json(load_record(path))
        olds.append(check_replacement(rec, Path(replaces[i]), runs_dir) if replaces else None)
        weights = find_weights(rec, path)  # missing or mismatched weights: refused either way
        if verify:
            own = [c for c in rec["eval"]["accuracy"] if c in DETERMINISTIC]
            _, result = verify_path(
                path, columns=columns or own, n=n, data_dir=data_dir, write=False
            )
            if result["state"] == FAILED:
                raise ArdbenchError(f"{path}: not added: {result['reason']}")
        else:
            result = {
                "format": "ardbench-verify/1",
                "run_id": rec["run_id"],
                "state": "unverified",
                "note": "added with --no-verify: nobody re-evaluated these numbers",
            }
        checks.append((rec, weights, result))
    out = []
    for i, ((dest, status), (rec, weights, result)) in enumerate(
        zip(add_records(sources, runs_dir), checks, strict=True)
    ):
        # published weights are safetensors only (no pickle in the repository); a record
        # that names only its model.pt stays checkable where its run directory is
        target = runs_dir.parent / "weights" / f"{rec['run_id']}{weights.path.suffix}"
        if weights.path.suffix == ".safetensors" and not target.is_file():
            _copy(weights.path, target)
        result = {**result, "record": portable_path(dest)}
        if isinstance(result.get("weights"), dict) and target.is_file():
            result["weights"] = {**result["weights"], "path": portable_path(target)}
        old = olds[i]
        if old is not None:
            result["replaces"] = replacement_block(rec, old)
            remove_replaced(Path(replaces[i]), old["run_id"])
        write_json_atomic(verify_result_path(dest, rec["run_id"]), result)
        out.append((dest, status, result))
    return out
