"""``ardbench sweep``: a grid of runs (methods × seeds × teachers × students × recipes ×
protocols), resumable, run by an executor (:mod:`ardbench.executors`: local processes or a
Slurm job array, both through ``submitit``), then one leaderboard of the runs it made.

**Identity.** A grid point is its resolved config; a run is identified by the config's hash
(:meth:`~ardbench.protocols.RunConfig.config_hash`: everything that defines the computation,
the seed included; paths, the device and the speed switches excluded). Rerunning a sweep
looks every point up in ``DIR/runs/`` by that hash: a finished run (``record.json``) is
skipped, an interrupted one is continued with ``resume`` (to the same weights as an
uninterrupted run), a missing one is started. Changing the grid (more seeds, another method)
and rerunning runs only the new points.

**Layout** of a sweep directory::

    DIR/sweep.json      the grid as given and its points (key, label, resolved config)
    DIR/runs/           the run directories (ardbench run's layout)
    DIR/jobs/           submitit's folder: one log per job (<job id>_0_log.out / .err)
    DIR/tasks/          each point's latest job outcome (<key>.json: status or its error)
    DIR/records/        copies of the finished points' records (ardbench.sweep_results)
    DIR/leaderboard/    the tables of those records (ardbench leaderboard's layout)
    DIR/slurm/          Slurm only: the job array's script and its index -> point list

**Concurrency.** One sweep process per directory (a lock file); each run holds a lock while it
trains, so a run still training (a job that outlived its sweep) is reported busy, never
trained twice.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable

from .errors import ArdbenchError, ConfigError

__all__ = [
    "Grid",
    "Point",
    "SweepDir",
    "SweepTask",
    "find_run_dirs",
    "grid_from_yaml",
    "parse_seeds",
    "point_state",
    "read_small_json",
    "read_task",
    "resolve_points",
    "run_point",
]

GRID_KEYS = ("methods", "seeds", "teachers", "students", "recipes", "protocols")
SCALAR_KEYS = ("dataset", "data_dir", "device", "epochs", "download")
YAML_KEYS = (*GRID_KEYS, *SCALAR_KEYS, "method", "recipe", "set")
MAX_SEEDS = 10_000  # per axis; checked before any list is built
MAX_POINTS = 10_000  # a grid's product, checked before any point is resolved


# ------------------------------------------------------------------------------------ grid


def parse_seeds(text: str | int | Sequence[Any]) -> tuple[int, ...]:
    """``"0,1,2"``, ``"0-4"`` (inclusive), ``3`` or a list -> seeds (order kept, no repeats)."""
    items: list[Any] = list(text) if isinstance(text, (list, tuple)) else [text]
    seeds: list[int] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            try:
                lo, hi = (int(m[1]), int(m[2])) if m else (int(part), int(part))
            except ValueError:
                raise ConfigError(
                    f"seeds: {part!r} is not a seed", hint="e.g. 0,1,2 or 0-4"
                ) from None
            if hi < lo:
                raise ConfigError(
                    f"seeds: {part!r} is an empty range", hint=f"write it low-high: {hi}-{lo}"
                )
            if lo < 0:
                raise ConfigError(f"seeds: {part!r} is negative", hint="seeds are 0 or more")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise ConfigError(
                    f"seeds: {part!r} asks for more than {MAX_SEEDS} seeds",
                    hint="a sweep of that size is a mistake; give a smaller range",
                )
            seeds += [s for s in range(lo, hi + 1) if s not in seeds]
    if not seeds:
        raise ConfigError("seeds: none given", hint="e.g. --seeds 0,1")
    return tuple(seeds)


def _names(value: Any, key: str) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = tuple(str(v).strip() for v in items if str(v).strip())
    if not out:
        raise ConfigError(f"{key}: empty list")
    return out


@dataclass(frozen=True)
class Grid:
    """What to run: the axes (``None`` on an axis: the recipe's or protocol's own value),
    settings for every point, and ``--set``-style overrides."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    teachers: tuple[str | None, ...] = (None,)
    students: tuple[str | None, ...] = (None,)
    recipes: tuple[str | None, ...] = (None,)
    protocols: tuple[str | None, ...] = (None,)
    settings: Mapping[str, Any] = field(default_factory=dict)  # dataset, epochs, ...
    sets: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "teachers": list(self.teachers),
            "students": list(self.students),
            "recipes": list(self.recipes),
            "protocols": list(self.protocols),
            "settings": dict(self.settings),
            "sets": list(self.sets),
            "overrides": dict(self.overrides),
        }


def grid_from_yaml(path: str | Path) -> dict[str, Any]:
    """A sweep file -> the keyword arguments of :class:`Grid` it states. Keys: the axes
    (``methods``, ``seeds``, ``teachers``, ``students``, ``recipes``, ``protocols``; ``method``
    / ``recipe`` for one), the settings (``dataset``, ``data_dir``, ``device``, ``epochs``,
    ``download``) and ``set`` (a mapping ``{train.epochs: 2, beta: 6}`` or ``KEY=VALUE``
    strings)."""
    from .protocols.sections import unknown_key
    from .safe_yaml import load_yaml

    data = load_yaml(path, "sweep file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must be a YAML mapping at the top level")
    out: dict[str, Any] = {"settings": {}}
    for key, value in data.items():
        if key not in YAML_KEYS:
            raise unknown_key(str(key), YAML_KEYS, f"sweep file {path}")
        if key == "seeds":
            out["seeds"] = parse_seeds(value)
        elif key in ("method", "recipe"):
            out[key + "s"] = (str(value),)
        elif key in GRID_KEYS:
            out[key] = _names(value, f"sweep file {path}: {key}")
        elif key in SCALAR_KEYS:
            out["settings"][key] = value
        elif isinstance(value, Mapping):
            out["overrides"] = {str(k): v for k, v in value.items()}
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out["sets"] = tuple(value)
        else:
            raise ConfigError(
                f"sweep file {path}: set must be a mapping or a list of KEY=VALUE strings"
            )
    return out


@dataclass(frozen=True)
class Point:
    """One run of the grid: ``key`` = its config hash (the seed included)."""

    key: str
    label: str
    method: str
    seed: int
    config: dict[str, Any]


def resolve_points(grid: Grid, *, force: bool = False) -> list[Point]:
    """Every point's config, resolved and validated before anything runs; points that resolve
    to the same computation count once (a teacher-free method ignores the teachers axis).
    ``force``: accept an implausible L∞ radius (``ardbench sweep --force``)."""
    from .api import config as resolve
    from .methods import get_method

    axes_sizes = [len(a) for a in (grid.methods, grid.recipes, grid.protocols)]
    axes_sizes += [len(a) for a in (grid.teachers, grid.students, grid.seeds)]
    if math.prod(axes_sizes) > MAX_POINTS:
        raise ConfigError(
            f"the grid has {math.prod(axes_sizes)} points (more than {MAX_POINTS})",
            hint="sweep fewer methods, seeds or models at once",
        )
    points: dict[str, Point] = {}
    axes = itertools.product(
        grid.methods, grid.recipes, grid.protocols, grid.teachers, grid.students, grid.seeds
    )
    for method, recipe, protocol, teacher, student, seed in axes:
        if teacher is not None and not get_method(method).needs_teacher:
            teacher = None
        cfg = resolve(
            method,
            protocol=protocol,
            recipe=recipe,
            teacher=teacher,
            student=student,
            seed=seed,
            sets=grid.sets,
            force=force,
            **dict(grid.settings),
            **dict(grid.overrides),
        )
        key = cfg.config_hash()
        if key in points:
            continue
        bits = [method]
        bits += [f"recipe={recipe}"] if len(grid.recipes) > 1 else []
        bits += [f"protocol={protocol}"] if len(grid.protocols) > 1 else []
        bits += [f"teacher={cfg.teacher}"] if len(grid.teachers) > 1 and cfg.teacher else []
        bits += [f"student={cfg.student}"] if len(grid.students) > 1 else []
        bits.append(f"seed={cfg.train.seed}")
        points[key] = Point(key, " ".join(bits), method, cfg.train.seed, cfg.to_dict())
    return list(points.values())


# ------------------------------------------------------------------------------ directory


class SweepDir:
    """A sweep directory (see the module docstring) and the state of its points."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.runs = self.root / "runs"
        self.jobs = self.root / "jobs"
        self.records = self.root / "records"
        self.tasks = self.root / "tasks"
        self.leaderboard = self.root / "leaderboard"
        self.slurm = self.root / "slurm"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the sweep's lock: a second sweep process on this directory is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".sweep.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArdbenchError(
                    f"another `ardbench sweep` is running on {self.root}",
                    hint="wait for it, or stop it (its runs resume on the next sweep)",
                ) from None
            yield

    def write_manifest(self, grid: Grid, points: Sequence[Point]) -> None:
        from .io import write_json_atomic

        write_json_atomic(
            self.root / "sweep.json",
            {
                "grid": grid.to_dict(),
                "points": [{"key": p.key, "label": p.label, "config": p.config} for p in points],
            },
        )

    def status(self, points: Sequence[Point]) -> dict[str, tuple[str, Path | None]]:
        """key -> (``finished`` | ``interrupted`` | ``new``, the run directory or None)."""
        dirs = find_run_dirs(self.runs)
        return {p.key: point_state(dirs.get(p.key, [])) for p in points}


def find_run_dirs(runs_dir: Path) -> dict[str, list[Path]]:
    """config hash -> the run directories under ``runs_dir`` that train it."""
    from .io import read_json_bounded
    from .protocols import RunConfig

    found: dict[str, list[Path]] = {}
    if not runs_dir.is_dir():
        return found
    for cfg_path in sorted(runs_dir.glob("*/config.json")):
        try:
            cfg = RunConfig.from_dict(read_json_bounded(cfg_path))  # regular, bounded, not deep
        except (OSError, ValueError, ArdbenchError):
            continue  # not a run this sweep can identify
        found.setdefault(cfg.config_hash(), []).append(cfg_path.parent)
    return found


def point_state(dirs: Sequence[Path]) -> tuple[str, Path | None]:
    finished = [d for d in dirs if (d / "record.json").is_file()]
    if finished:
        return "finished", finished[0]
    if dirs:
        # the most advanced attempt: a checkpoint beats none, then the longest log
        def progress(d: Path) -> tuple[bool, int]:
            log = d / "log.jsonl"
            lines = log.read_text(errors="replace").count("\n") if log.is_file() else 0
            return (d / "checkpoint.pt").is_file(), lines

        return "interrupted", max(dirs, key=progress)
    return "new", None


# ----------------------------------------------------------------------------------- a run


@contextmanager
def _run_lock(runs_dir: Path, key: str) -> Iterator[bool]:
    """An exclusive lock per point while it trains (released when the process dies)."""
    locks = runs_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def run_point(
    key: str,
    config: dict[str, Any],
    runs_dir: str | Path,
    *,
    threads: int | None = None,
    cuda_visible_devices: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one point to the end in this process: skip it when finished, resume it when
    interrupted, else start it. Returns ``{key, status, run_dir, threads, metrics}``."""
    if cuda_visible_devices is not None:
        # before CUDA is initialised (torch reads it then): this job's GPU(s) only
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    from .threads import set_threads

    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    n_threads = set_threads(threads)
    from . import api
    from .protocols import RunConfig

    runs = Path(runs_dir)
    out: dict[str, Any] = {"key": key, "threads": n_threads, "pid": os.getpid()}
    with _run_lock(runs, key) as mine:
        if not mine:
            return {**out, "status": "busy", "run_dir": None, "metrics": {}}
        state, run_dir = point_state(find_run_dirs(runs).get(key, []))
        if state == "finished" and run_dir is not None:
            run = api.Run(run_dir)
            status = "skipped"
        elif state == "interrupted" and run_dir is not None:
            run = api.resume(run_dir, progress=progress, threads=n_threads)
            status = "resumed"
        else:
            cfg = RunConfig.from_dict(config, where=f"sweep point {key}")
            if cfg.config_hash() != key:
                raise ArdbenchError(f"sweep point {key}: its config hashes to {cfg.config_hash()}")
            run = api.train_config(cfg, runs=runs, progress=progress, threads=n_threads)
            status = "trained"
    return {**out, "status": status, "run_dir": str(run.directory), "metrics": run.metrics}


class SweepTask(Checkpointable):
    """One point as a submitit job. A ``Checkpointable``: on a Slurm timeout or preemption
    submitit requeues the same task, which finds its run interrupted and resumes it. With
    ``tasks_dir`` it writes ``<key>.json`` there: its outcome, or its error in one line."""

    def __init__(
        self,
        key: str,
        config: dict[str, Any],
        runs_dir: str,
        threads: int | None = None,
        cuda_visible_devices: str | None = None,
        tasks_dir: str | None = None,
    ) -> None:
        self.key = key
        self.config = config
        self.runs_dir = runs_dir
        self.threads = threads
        self.cuda_visible_devices = cuda_visible_devices
        self.tasks_dir = tasks_dir

    def __call__(self) -> dict[str, Any]:
        self._write({"status": "running"})
        try:
            out = run_point(
                self.key,
                self.config,
                self.runs_dir,
                threads=self.threads,
                cuda_visible_devices=self.cuda_visible_devices,
            )
        except Exception as exc:
            self._write({"status": "failed", "error": error_line(exc)})
            raise
        self._write({k: out[k] for k in ("status", "run_dir", "metrics")})
        return out

    def _write(self, data: dict[str, Any]) -> None:
        if self.tasks_dir is None:
            return
        from .io import write_json_atomic

        job_id, log = _job_identity()
        path = Path(self.tasks_dir) / f"{self.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"key": self.key, "job_id": job_id, "log": log, **data})


def _job_identity() -> tuple[str | None, str | None]:
    """This submitit job's id (``12_3`` for an array task) and its stderr log."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), str(env.paths.stderr)
    except Exception:  # not inside a submitit job (a direct call)
        return None, None


def error_line(exc: BaseException) -> str:
    """One line for a failed point: ardbench's own message, else the exception's type and
    first line (the traceback is in the job's log)."""
    from .errors import first_line

    if isinstance(exc, ArdbenchError):
        return " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {first_line(exc, 400)}"


MAX_TASK_FILE = 1 << 20


def read_small_json(path: Path, limit: int = MAX_TASK_FILE) -> Any:
    """A small JSON file the sweep wrote, or None when it is missing, not a regular file,
    too large or not JSON (never followed as a link, never read unbounded)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1
            return json.loads(fh.read(limit + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def read_task(sweep: SweepDir, key: str) -> dict[str, Any] | None:
    """What the latest job of point ``key`` wrote (see :class:`SweepTask`), or None."""
    data = read_small_json(sweep.tasks / f"{key}.json")
    return data if isinstance(data, dict) else None
