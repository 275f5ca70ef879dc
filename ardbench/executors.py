"""Where a sweep's runs execute, through ``submitit``: local processes or a Slurm job array.

- **local** (:func:`run_local`): at most ``parallel`` jobs at once, each a fresh process
  (``submitit.LocalExecutor``; its log in ``DIR/jobs/``). GPUs: job slot *i* sees
  ``gpus[i % len(gpus)]`` alone through ``CUDA_VISIBLE_DEVICES``, so ``parallel`` equal to the
  number of GPUs gives one GPU per run and a larger ``parallel`` lets runs share GPUs.
  (submitit's own GPU setting would set ``CUDA_VISIBLE_DEVICES=""`` for a job that asks for
  none, hiding every GPU; the job sets the variable itself before CUDA starts.)
- **slurm** (:func:`submit_slurm`): one job array (``submitit.SlurmExecutor.submit_array``),
  ``--array=0-(n-1)%parallel``, with the partition, time limit, GPUs and CPUs per run given;
  each task sets its torch threads to its CPUs. On a timeout or preemption submitit requeues
  the task, which resumes its run. ``dry_run`` writes the script submitit would submit (and
  the list of points by array index) without a cluster.

Every job sets its torch thread count (``threads``; default: ``OMP_NUM_THREADS`` if set, else
the physical cores divided among the concurrent jobs): N processes each starting one thread
per core would oversubscribe the CPU N times over.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArdbenchError
from .io import write_json_atomic, write_text_atomic
from .sweep import Point, SweepDir, SweepTask

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
                )
                job = executor.submit(task)
                running[slot] = (job, point, gpu, time.perf_counter())
                if on_start:
                    on_start(point, job, gpu)
            time.sleep(POLL_S)
            for slot, (job, point, gpu, t0) in list(running.items()):
                if not job.done():
                    continue
                del running[slot]
                outcome = _outcome(job, point, gpu, time.perf_counter() - t0)
                outcome.threads = outcome.threads or n_threads
                outcomes.append(outcome)
                if on_end:
                    on_end(outcome)
    except BaseException:
        stop_jobs([job for job, *_ in running.values()])
        raise
    return outcomes


def stop_jobs(jobs: Sequence[Any], grace_s: float = 5.0) -> None:
    """Stop local jobs: submitit's cancel (SIGINT to each job's controller, which stops its
    task), then SIGKILL to what is left. The second step matters when SIGINT is ignored,
    as it is in every process started in the background by a non-interactive shell (``nohup
    ardbench sweep ... &``). A killed run loses only its unfinished epoch."""
    import signal

    for job in jobs:
        job.cancel(check=False)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not all(job.done() for job in jobs):
        time.sleep(0.1)
    for job in jobs:
        if job.done():
            continue
        pid = int(job.job_id)  # a local job's id is its controller's pid
        for child in _children(pid):
            _kill(child, signal.SIGKILL)
        _kill(pid, signal.SIGKILL)


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


def _outcome(job: Any, point: Point, gpu: str | None, wall_s: float) -> Outcome:
    log = str(job.paths.stderr)
    try:
        result = job.result()
    except Exception as exc:  # the job's exception, with its traceback in the message
        return Outcome(point, "failed", error=_error_line(exc), log=log, gpu=gpu, wall_s=wall_s)
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


# ------------------------------------------------------------------------------------ slurm


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    parallel: int | None = None  # array tasks at once (default: all)
    mem_gb: float | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the job (module load, conda activate)
    job_name: str = "ardbench-sweep"

    def parameters(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "time": int(self.time_min),
            "gpus_per_node": int(self.gpus_per_run),
            "cpus_per_task": int(self.cpus_per_run),
            "ntasks_per_node": 1,
            "array_parallelism": int(self.parallel or n),
            # each task's torch threads = its CPUs (also for code that reads the variable)
            "setup": [*self.setup, f"export OMP_NUM_THREADS={int(self.cpus_per_run)}"],
        }
        if self.partition:
            params["partition"] = self.partition
        if self.mem_gb:  # sbatch's --mem (submitit's native name; mem_gb is AutoExecutor's)
            mb = int(round(self.mem_gb * 1024))
            params["mem"] = f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"
        if self.account:
            params["account"] = self.account
        return params


@dataclass
class SlurmSubmission:
    script: Path  # the array's sbatch script (dry run: written here; else submitit's copy)
    points: Path  # array index -> point
    job_ids: list[str]
    dry_run: bool


def _script_executor(folder: Path) -> Any:
    """submitit's Slurm executor without the check for ``srun``: used only to render the
    array script a real submission would send (``_make_submission_file_text``)."""
    import submitit

    class ScriptOnly(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    return ScriptOnly(folder=folder)


def submit_slurm(
    sweep: SweepDir,
    points: Sequence[Point],
    options: SlurmOptions,
    *,
    dry_run: bool = False,
) -> SlurmSubmission:
    """Submit ``points`` as one job array (or, ``dry_run``, write its script)."""
    import submitit

    n = len(points)
    params = options.parameters(n)
    sweep.slurm.mkdir(parents=True, exist_ok=True)
    index = sweep.slurm / "points.json"
    write_json_atomic(
        index,
        [
            {"array_index": i, "key": p.key, "label": p.label, "config": p.config}
            for i, p in enumerate(points)
        ],
    )
    tasks = [
        SweepTask(p.key, p.config, str(sweep.runs.resolve()), threads=options.cpus_per_run)
        for p in points
    ]
    if dry_run:
        executor = _script_executor(sweep.jobs.resolve())
        executor.update_parameters(**params)
        # what submitit does for an array: the same parameters plus map_count = n
        executor.parameters["map_count"] = n
        text = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
        script = sweep.slurm / "sweep_array.sbatch"
        shebang, _, rest = text.partition("\n")
        write_text_atomic(script, f"{shebang}\n{_dry_run_note(n)}{rest}")
        return SlurmSubmission(script, index, [], True)
    try:
        executor = submitit.SlurmExecutor(folder=sweep.jobs.resolve())
    except RuntimeError as exc:  # no srun: not on a Slurm cluster
        raise ArdbenchError(
            f"cannot submit to Slurm here ({exc})",
            hint="run on a cluster's login node, or pass --dry-run to write the scripts",
        ) from None
    executor.update_parameters(**params)
    jobs = executor.submit_array(tasks)
    job_ids = [str(j.job_id) for j in jobs]
    write_json_atomic(sweep.slurm / "jobs.json", {"job_ids": job_ids, "submitted_at": time.time()})
    script = jobs[0].paths.submission_file if jobs else sweep.slurm / "none"
    return SlurmSubmission(Path(script), index, job_ids, False)


def _dry_run_note(n: int) -> str:
    return (
        f"# ardbench sweep --dry-run: the job array submitit would submit for {n} run(s);\n"
        "# array task i trains points.json[i]. Submitting also needs submitit's job files,\n"
        "# which the same `ardbench sweep` command without --dry-run writes and submits.\n"
    )
