"""Where a sweep's runs execute, through ``submitit``: local processes or a Slurm job array.

- **local** (:func:`run_local`): at most ``parallel`` jobs at once, each a fresh process
  (``submitit.LocalExecutor``; its log in ``DIR/jobs/``). GPUs: job slot *i* sees
  ``gpus[i % len(gpus)]`` alone through ``CUDA_VISIBLE_DEVICES``, so ``parallel`` equal to the
  number of GPUs gives one GPU per run and a larger ``parallel`` lets runs share GPUs.
  (submitit's own GPU setting would set ``CUDA_VISIBLE_DEVICES=""`` for a job that asks for
  none, hiding every GPU; the job sets the variable itself before CUDA starts.)
- **slurm** (:mod:`ardbench.slurm`): one job array, followed until its tasks end.

Every job sets its torch thread count (``threads``; default: ``OMP_NUM_THREADS`` if set, else
the physical cores divided among the concurrent jobs): N processes each starting one thread
per core would oversubscribe the CPU N times over.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArdbenchError
from .sweep import Point, SweepDir, SweepTask, read_task

__all__ = [
    "Outcome",
    "SlurmOptions",
    "SlurmSubmission",
    "jobs_threads",
    "run_local",
    "stop_jobs",
    "submit_slurm",
    "visible_gpus",
]

POLL_S = 0.5
NO_LIMIT_MIN = 60 * 24 * 365  # submitit's local jobs are killed at their time limit


@dataclass
class Outcome:
    """How one point's job ended."""

    point: Point
    status: str  # trained | resumed | skipped | busy | failed
    run_dir: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    gpu: str | None = None
    error: str | None = None
    log: str | None = None
    wall_s: float = 0.0


def jobs_threads(threads: int | None, concurrent: int) -> int:
    """Torch threads per job: ``threads``, else ``OMP_NUM_THREADS``, else the physical cores
    shared among ``concurrent`` jobs (at least one)."""
    from .threads import parse_threads, physical_cores

    if threads is not None:
        return parse_threads(threads) or 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return parse_threads(env) or 1
        except ArdbenchError:
            pass
    return max(1, physical_cores() // max(1, concurrent))


def visible_gpus(spec: str | None = "auto") -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` entries for the jobs: ``auto`` = every GPU this process sees,
    ``none`` = no GPU, ``0,2`` = those of the GPUs this process sees (by index)."""
    spec = (spec or "auto").strip()
    if spec == "none":
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec == "auto":
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        indices = list(range(n))
    else:
        try:
            indices = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ArdbenchError(
                f"--gpus {spec!r}: expected auto, none or indices like 0,1"
            ) from None
    if env is not None and env.strip():
        entries = [e.strip() for e in env.split(",") if e.strip()]
        bad = [i for i in indices if i >= len(entries)]
        if bad:
            raise ArdbenchError(f"--gpus {spec}: only {len(entries)} GPU(s) are visible ({env})")
        return [entries[i] for i in indices]
    return [str(i) for i in indices]


def _error_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # submitit's message holds the job's traceback; its last "Error:" line is the exception
    errors = [ln for ln in lines if ("Error" in ln.split(":")[0] or ln.startswith("ardbench"))]
    return (errors[-1] if errors else (lines[-1] if lines else type(exc).__name__))[:500]


# ------------------------------------------------------------------------------------ local


def run_local(
    sweep: SweepDir,
    points: Sequence[Point],
    *,
    parallel: int = 1,
    gpus: Sequence[str] = (),
    threads: int | None = None,
    timeout_min: float | None = None,
    on_start: Callable[[Point, Any, str | None], None] | None = None,
    on_end: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``points`` as local submitit jobs, at most ``parallel`` at once; returns their
    outcomes in the order they ended. An interrupt (Ctrl-C, SIGTERM) cancels the running jobs
    (their finished epochs are checkpointed: the next sweep resumes them)."""
    import submitit

    if parallel < 1:
        raise ArdbenchError(f"--parallel must be at least 1, got {parallel}")
    executor = submitit.LocalExecutor(folder=sweep.jobs)
    executor.update_parameters(timeout_min=timeout_min or NO_LIMIT_MIN, gpus_per_node=0)
    n_threads = jobs_threads(threads, min(parallel, len(points)))
    pending = deque(points)
    running: dict[int, tuple[Any, Point, str | None, float]] = {}
    outcomes: list[Outcome] = []
    try:
        while pending or running:
            for slot in range(parallel):
                if slot in running or not pending:
                    continue
                point = pending.popleft()
                gpu = gpus[slot % len(gpus)] if gpus else None
                task = SweepTask(
                    point.key,
                    point.config,
                    str(sweep.runs),
                    threads=n_threads,
                    cuda_visible_devices=gpu if gpus else "",
                    tasks_dir=str(sweep.tasks),
                )
                with _sigint_ignored():  # the job never sees the terminal's Ctrl-C
                    job = executor.submit(task)
                running[slot] = (job, point, gpu, time.perf_counter())
                if on_start:
                    on_start(point, job, gpu)
            time.sleep(POLL_S)
            for slot, (job, point, gpu, t0) in list(running.items()):
                if not job.done():
                    continue
                del running[slot]
                outcome = _outcome(sweep, job, point, gpu, time.perf_counter() - t0)
                outcome.threads = outcome.threads or n_threads
                outcomes.append(outcome)
                if on_end:
                    on_end(outcome)
    except BaseException:
        stop_jobs([job for job, *_ in running.values()])
        raise
    return outcomes


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start processes with SIGINT ignored (inherited through exec): a Ctrl-C reaches only
    the sweep, which then stops its jobs itself (:func:`stop_jobs`), so no job prints a
    ``KeyboardInterrupt`` traceback of its own to the terminal."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can be set only from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_jobs(jobs: Sequence[Any]) -> None:
    """Stop local jobs: SIGKILL to each job's task processes, then to its controller. The
    jobs ignore SIGINT (see :func:`_sigint_ignored`, and every process started in the
    background by a non-interactive shell does too) and submitit's task ignores SIGTERM, so
    a kill is the one signal that stops them; a killed run loses only its unfinished epoch
    (every finished one is checkpointed)."""
    for job in jobs:
        if job.done():
            continue
        pid = int(job.job_id)  # a local job's id is its controller's pid
        for child in _children(pid):
            _kill(child, signal.SIGKILL)
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(sweep: SweepDir, job: Any, point: Point, gpu: str | None, wall_s: float) -> Outcome:
    log = str(job.paths.stderr)
    try:
        result = job.result()
    except Exception as exc:  # the job's exception, with its traceback in the message
        task = read_task(sweep, point.key) or {}
        error = str(task["error"]) if task.get("status") == "failed" else _error_line(exc)
        return Outcome(point, "failed", error=error, log=log, gpu=gpu, wall_s=wall_s)
    return Outcome(
        point,
        result["status"],
        run_dir=result.get("run_dir"),
        metrics=result.get("metrics") or {},
        threads=result.get("threads"),
        gpu=gpu,
        log=log,
        wall_s=wall_s,
    )


# the Slurm executor lives in ardbench.slurm (kept importable from here)
from .slurm import SlurmOptions, SlurmSubmission, submit_slurm  # noqa: E402
