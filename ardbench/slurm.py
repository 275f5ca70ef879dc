"""A sweep on Slurm: one job array through ``submitit``, followed until its tasks end.

- :func:`submit_slurm` submits the points as one array, ``--array=0-(n-1)%parallel``, with the
  partition, time limit, memory, GPUs and CPUs per run (or, ``dry_run``, writes the script).
  ``DIR/slurm/jobs.json`` maps each point to its latest task (job id, log), so a rerun of the
  same command follows the tasks still queued or running instead of submitting them again.
- :func:`job_states` asks ``sacct`` (accounting is what submitit relies on too) for the tasks'
  states; :func:`follow` polls them until every task has ended and reports each ending with
  what the task wrote in ``DIR/tasks/<key>.json`` (its status, or its one-line error).
- Time limits and preemption: submitit asks Slurm for ``USR2`` 90 s before the limit (and
  Slurm sends it on preemption); the task (:class:`~ardbench.sweep.SweepTask`, a
  ``Checkpointable``) is requeued and resumes its run from the last finished epoch.

The job script runs the submitting environment's python on the compute node: the sweep
directory and the environment must be on a filesystem every node sees.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArdbenchError
from .io import write_json_atomic, write_text_atomic
from .sweep import Point, SweepDir, SweepTask, read_task

__all__ = [
    "SlurmOptions",
    "SlurmSubmission",
    "active_jobs",
    "follow",
    "job_states",
    "known_states",
    "node_defaults",
    "submit_slurm",
    "submitted_jobs",
]

POLL_S = 2.0
MEM_GB_PER_CPU = 4  # the usual DefMemPerCPU of a cluster; runs need far less on CPU
# states after which a task will not run again (PREEMPTED may be followed by a requeue)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
ENDED |= {"BOOT_FAIL", "DEADLINE", "REVOKED"}
GRACE_S = 60.0


@dataclass(frozen=True)
class SlurmOptions:
    """Resources per run (one array task). ``mem_gb=None``: ``MEM_GB_PER_CPU`` per CPU;
    ``0``: the cluster's own default."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_run: int = 1
    cpus_per_run: int = 8
    parallel: int | None = None  # array tasks at once (default: all)
    mem_gb: float | None = None
    account: str | None = None
    setup: tuple[str, ...] = ()  # shell lines before the job (module load, conda activate)
    job_name: str = "ardbench-sweep"

    def __post_init__(self) -> None:
        checks = [
            ("--time", self.time_min, 1),
            ("--gpus-per-run", self.gpus_per_run, 0),
            ("--cpus-per-run", self.cpus_per_run, 1),
            ("--parallel", 1 if self.parallel is None else self.parallel, 1),
            ("--mem-gb", 0 if self.mem_gb is None else self.mem_gb, 0),
        ]
        for flag, value, least in checks:
            if not value >= least:
                raise ArdbenchError(f"{flag} must be at least {least}, got {value}")

    @property
    def memory(self) -> str | None:
        """sbatch's ``--mem`` for one run, or None (the cluster's default)."""
        gb = MEM_GB_PER_CPU * self.cpus_per_run if self.mem_gb is None else self.mem_gb
        if not gb:
            return None
        mb = max(1, int(round(gb * 1024)))
        return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"

    def parameters(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "time": int(self.time_min),
            "cpus_per_task": int(self.cpus_per_run),
            "ntasks_per_node": 1,
            "array_parallelism": int(self.parallel or n),
            # each task's torch threads = its CPUs (also for code that reads the variable)
            "setup": [*self.setup, f"export OMP_NUM_THREADS={int(self.cpus_per_run)}"],
        }
        if self.gpus_per_run:  # no --gpus-per-node=0: clusters without GRES reject it
            params["gpus_per_node"] = int(self.gpus_per_run)
        if self.partition:
            params["partition"] = self.partition
        if self.memory:  # sbatch's --mem (submitit's native name; mem_gb is AutoExecutor's)
            params["mem"] = self.memory
        if self.account:
            params["account"] = self.account
        return params


@dataclass
class SlurmSubmission:
    script: Path  # the array's sbatch script (dry run: written here; else submitit's copy)
    points: Path  # array index -> point
    job_ids: list[str]
    dry_run: bool

    @property
    def array_id(self) -> str:
        return self.job_ids[0].split("_")[0] if self.job_ids else ""


def node_defaults(partition: str | None = None) -> dict[str, float]:
    """Defaults that fit the partition's largest node, from ``sinfo``: 1 GPU per run where
    nodes have GPUs (GRES ``gpu``) else 0, 8 CPUs per run or a node's CPUs if fewer, and
    ``MEM_GB_PER_CPU`` per CPU or a CPU's share of the node's memory if less (a request no
    node can meet is refused or waits forever). Without ``sinfo`` (a dry run on a laptop):
    1 GPU, 8 CPUs, ``MEM_GB_PER_CPU``."""
    fallback = {"gpus": 1, "cpus": 8, "mem_gb_per_cpu": float(MEM_GB_PER_CPU)}
    cmd = ["sinfo", "-h", "-o", "%c|%m|%G", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return fallback
    nodes = []
    for line in out.splitlines():
        c, m, gres = (line.split("|") + ["", "", ""])[:3]
        if c.strip().isdigit() and m.strip().isdigit() and int(c) > 0:
            nodes.append((int(c), int(m), "gpu" in gres))
    if not nodes:
        return fallback
    cpus, mem_mb, _ = max(nodes)
    per_cpu = min(float(MEM_GB_PER_CPU), int(mem_mb / cpus / 1024 * 10) / 10) or 0.1
    return {"gpus": int(any(g for *_, g in nodes)), "cpus": min(8, cpus), "mem_gb_per_cpu": per_cpu}


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
    sweep: SweepDir, points: Sequence[Point], options: SlurmOptions, *, dry_run: bool = False
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
    runs, tasks_dir = str(sweep.runs.resolve()), str(sweep.tasks.resolve())
    tasks = [
        SweepTask(p.key, p.config, runs, threads=options.cpus_per_run, tasks_dir=tasks_dir)
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
    try:
        jobs = executor.submit_array(tasks)
    except subprocess.CalledProcessError as exc:  # sbatch refused (partition, memory, ...)
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
        raise ArdbenchError(
            f"sbatch refused the job array: {_last_line(out) or exc}",
            hint="check --partition, --account, --mem-gb, --gpus-per-run and --time",
        ) from None
    entries = submitted_jobs(sweep)
    for point, job in zip(points, jobs, strict=True):
        entries[point.key] = {"job_id": str(job.job_id), "log": str(job.paths.stderr)}
    write_json_atomic(sweep.slurm / "jobs.json", entries)
    script = jobs[0].paths.submission_file if jobs else sweep.slurm / "none"
    return SlurmSubmission(Path(script), index, [str(j.job_id) for j in jobs], False)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _dry_run_note(n: int) -> str:
    return (
        f"# ardbench sweep --dry-run: the job array submitit would submit for {n} run(s);\n"
        "# array task i trains points.json[i]. Submitting also needs submitit's job files,\n"
        "# which the same `ardbench sweep` command without --dry-run writes and submits.\n"
    )


# ---------------------------------------------------------------------------------- states


def submitted_jobs(sweep: SweepDir) -> dict[str, dict[str, str]]:
    """point key -> its latest task: ``{"job_id": "12_3", "log": ".../12_3_0_log.err"}``."""
    from .sweep import read_small_json

    data = read_small_json(sweep.slurm / "jobs.json")
    if not isinstance(data, dict):
        return {}
    return {
        str(k): {key: str(v.get(key, "")) for key in ("job_id", "log", "state")}
        for k, v in data.items()
        if isinstance(v, dict)
    }


def known_states(sweep: SweepDir, job_ids: dict[str, str]) -> dict[str, str]:
    """point key -> its task's state: Slurm's, else the one this sweep saw it end with (a
    task cancelled while pending leaves Slurm's records within minutes, accounting's never)."""
    live = job_states(list(job_ids.values()))
    seen = submitted_jobs(sweep)
    out = {}
    for key, job_id in job_ids.items():
        entry = seen.get(key, {})
        remembered = entry.get("state") if entry.get("job_id") == job_id else None
        out[key] = live.get(job_id) or remembered or "UNKNOWN"
    return out


def _remember(sweep: SweepDir, key: str, state: str) -> None:
    entries = submitted_jobs(sweep)
    if key in entries:
        entries[key]["state"] = state
        write_json_atomic(sweep.slurm / "jobs.json", entries)


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Slurm job id (``12_3``) -> its state (``PENDING``, ``RUNNING``, ``COMPLETED``,
    ``CANCELLED``, ...) as ``sacct`` reports it; ids sacct does not know are left out."""
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if not arrays:
        return {}
    cmd = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ArdbenchError(
            f"cannot read the jobs' states with sacct ({exc})",
            hint="the tasks' states need Slurm's accounting (slurmdbd), as submitit does",
        ) from None
    states = _parse_states(out)
    missing = [j for j in job_ids if j and j not in states]
    if missing:  # array tasks cancelled while pending never reach accounting: ask slurmctld
        cmd = ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(arrays)]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        states |= {j: s for j, s in _parse_states(out).items() if j not in states}
    known = {j.split("_")[0] for j in states}
    for j in job_ids:
        # an array task scancel'ed before it started leaves no record anywhere, while the
        # array's other tasks keep theirs: nothing else removes one task from an array
        if j not in states and "_" in j and j.split("_")[0] in known:
            states[j] = "CANCELLED"
    return {j: states[j] for j in job_ids if j in states}


def _parse_states(text: str) -> dict[str, str]:
    states: dict[str, str] = {}
    for line in text.splitlines():
        job, _, state = line.partition("|")
        state = state.split()[0] if state.split() else "UNKNOWN"  # "CANCELLED by 0"
        for one in _expand(job.strip()):
            states[one] = state
    return states


def _expand(job: str) -> list[str]:
    """``12_[2-4,7%2]`` (pending array tasks) -> ``12_2 .. 12_4, 12_7``; others as they are."""
    m = re.fullmatch(r"(\d+)_\[([^\]%]*)(?:%\d+)?\]", job)
    if not m:
        return [job]
    out = []
    for part in m[2].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{m[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def active_jobs(sweep: SweepDir, points: Sequence[Point]) -> dict[str, str]:
    """point key -> job id, for the points whose latest task is still queued or running."""
    entries = submitted_jobs(sweep)
    ids = {p.key: entries[p.key]["job_id"] for p in points if p.key in entries}
    if not ids:
        return {}
    states = known_states(sweep, ids)
    return {k: j for k, j in ids.items() if states[k] not in ENDED and states[k] != "UNKNOWN"}


@dataclass
class Ended:
    """How one followed task ended."""

    point: Point
    status: str  # trained | resumed | skipped | busy | failed | cancelled | timeout | ...
    job_id: str
    run_dir: str | None = None
    error: str | None = None
    log: str | None = None
    metrics: dict[str, Any] | None = None


def ended(sweep: SweepDir, point: Point, job_id: str, state: str, log: str | None) -> Ended:
    """What a task that reached ``state`` did, from the file it wrote (``DIR/tasks/``)."""
    task = read_task(sweep, point.key) or {}
    if task.get("job_id") not in (None, job_id.split("_")[0], job_id):
        task = {}  # written by an earlier task of this point
    status = str(task.get("status") or "")
    if state == "COMPLETED" and status in ("trained", "resumed", "skipped", "busy"):
        return Ended(
            point, status, job_id, task.get("run_dir"), log=log, metrics=task.get("metrics")
        )
    if status == "failed":
        return Ended(point, "failed", job_id, error=str(task.get("error")), log=log)
    name = state.lower() if state != "COMPLETED" else "failed"
    why = "Slurm has no record of the task" if state == "UNKNOWN" else f"Slurm ended it: {state}"
    return Ended(point, name, job_id, error=why, log=log)


def follow(
    sweep: SweepDir,
    jobs: dict[str, str],
    points: Sequence[Point],
    *,
    on_end: Callable[[Ended], None] | None = None,
    poll_s: float = POLL_S,
) -> list[Ended]:
    """Poll the tasks ``jobs`` (point key -> job id) until each has ended; returns how."""
    by_key = {p.key: p for p in points}
    logs = {k: v["log"] for k, v in submitted_jobs(sweep).items()}
    waiting = dict(jobs)
    since: dict[str, float] = {}  # key -> when it was first seen preempted or unknown
    out: list[Ended] = []
    while waiting:
        states = job_states(list(waiting.values()))
        now = time.monotonic()
        for key, job_id in list(waiting.items()):
            state = states.get(job_id, "UNKNOWN")
            if state in ("PREEMPTED", "UNKNOWN"):  # ended, unless Slurm requeues or lists it
                if now - since.setdefault(key, now) < GRACE_S:
                    continue
            elif state not in ENDED:
                since.pop(key, None)
                continue
            del waiting[key]
            _remember(sweep, key, state)
            end = ended(sweep, by_key[key], job_id, state, logs.get(key))
            out.append(end)
            if on_end:
                on_end(end)
        if waiting:
            time.sleep(poll_s)
    return out


def cancel_hint(job_ids: Sequence[str]) -> str:
    arrays = sorted({j.split("_")[0] for j in job_ids})
    return f"scancel {' '.join(arrays)}"
