"""Sweeps on a real single-node Slurm cluster (scripts/slurm/cluster.py): a throttled job array,
cancel and rerun, USR2 preemption with requeue and resume, a failing task, resource flags,
Ctrl-C. Without Slurm (no packages, not root) these tests skip with the reason; under CI
(``CI=true``) a cluster that cannot come up fails them instead."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from ardbench.cli import main
from ardbench.results.leaderboard import collect_records
from ardbench.results.tables import build_tables
from ardbench.sweep import Grid, SweepDir, find_run_dirs, resolve_points

REPO = Path(__file__).resolve().parents[1]
TINY = ["train_subset=128", "probe=32", "eval.n_examples=64", "attack.steps=1"]
RESOURCES = ["--gpus-per-run", "0", "--cpus-per-run", "1", "--mem-gb", "1"]
pytestmark = pytest.mark.slurm


def _cluster_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "slurm_cluster", REPO / "scripts/slurm/cluster.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cluster() -> Any:
    """The test cluster, up for the session (left running when it was up before)."""
    mod = _cluster_module()
    on_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    why = mod.missing()
    if why:
        if on_ci:
            pytest.fail(f"CI runs the Slurm tests, but {why}")
        pytest.skip(f"no Slurm test cluster: {why}")
    c = mod.Cluster()
    was_up = all(c.status().values())
    try:
        c.up()
    except (mod.ClusterError, OSError, subprocess.SubprocessError) as exc:
        if on_ci:
            pytest.fail(f"the Slurm test cluster did not come up: {exc}")
        pytest.skip(f"the Slurm test cluster did not come up: {exc}")
    patch = pytest.MonkeyPatch()
    patch.setenv("SLURM_CONF", str(c.conf))  # sbatch, sacct, scancel and the jobs find it
    yield c
    patch.undo()
    if not was_up:
        c.down()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    from ardbench.models import build_arch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(build_arch("small_cnn", 10).state_dict(), path)
    return f"small_cnn:{path}"


def _argv(
    d: Path, teacher: str, seeds: str = "0,1", methods: str = "rslad,ard", resources: bool = True
) -> list[str]:
    argv = ["sweep", "--dir", str(d), "--methods", methods, "--seeds", seeds, "--recipes", "demo"]
    argv += ["--teachers", teacher, "--epochs", "1", "--executor", "slurm"]
    argv += RESOURCES if resources else []
    for s in TINY:
        argv += ["--set", s]
    return argv


def _sacct(array: str) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {j: s.split()[0] for j, s in (ln.split("|") for ln in out.splitlines())}


def _jobs(d: Path) -> dict[str, dict[str, str]]:
    path = d / "slurm" / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _wait_for(what: str, cond: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _overlap(records: list[dict]) -> int:
    from datetime import datetime

    events = []
    for r in records:
        events += [(datetime.fromisoformat(r["started_at"]), 1)]
        events += [(datetime.fromisoformat(r["finished_at"]), -1)]
    now = best = 0
    for _, step in sorted(events):
        now += step
        best = max(best, now)
    return best


def test_a_throttled_job_array_finishes_and_renders_its_table(cluster, tmp_path, teacher, capsys):
    d = tmp_path / "sw"
    t0 = time.perf_counter()
    assert main([*_argv(d, teacher), "--parallel", "2"]) == 0
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert "4 new" in out and "4 task(s), 2 at a time" in out and out.count("trained ") == 4
    jobs = _jobs(d)
    arrays = {v["job_id"].split("_")[0] for v in jobs.values()}
    assert len(jobs) == 4 and len(arrays) == 1  # one array of four tasks
    (array,) = arrays
    script = (d / "jobs" / f"{array}_submission.sh").read_text().splitlines()
    assert "#SBATCH --array=0-3%2" in script
    assert set(_sacct(array).values()) == {"COMPLETED"} and len(_sacct(array)) == 4
    records = [json.loads(p.read_text()) for p in (d / "runs").glob("*/record.json")]
    assert len(records) == 4 and _overlap(records) <= 2  # the throttle held
    (table,) = build_tables(collect_records(d / "records"))
    assert sorted((r.method, r.seeds) for r in table.rows) == [("ard", (0, 1)), ("rslad", (0, 1))]
    assert (d / "leaderboard" / table.relpath).is_file()
    print(f"\n2x2 demo grid on the local Slurm cluster: {wall:.1f}s", file=sys.stderr)


def test_a_cancelled_task_shows_cancelled_and_the_rerun_finishes_it(
    cluster, tmp_path, teacher, capsys
):
    d = tmp_path / "sw"
    argv = [*_argv(d, teacher, methods="rslad"), "--parallel", "1"]

    def cancel_second() -> None:  # task 1 waits behind the throttle: cancel it there
        job = _wait_for("the submission", lambda: len(_jobs(d)) == 2 and _jobs(d))
        second = sorted(v["job_id"] for v in job.values())[1]
        subprocess.run(["scancel", second], check=True)

    canceller = threading.Thread(target=cancel_second)
    canceller.start()
    assert main(argv) == 1
    canceller.join()
    captured = capsys.readouterr()
    assert "cancelled" in captured.err and "1 task(s) did not finish" in captured.err
    (done,) = list((d / "runs").glob("*/record.json"))
    done_bytes = done.read_bytes()

    assert main([*argv, "--status"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "seed=" in ln]
    seed1 = [ln for ln in rows if "seed=1" in ln]
    assert seed1 and "cancelled (job" in seed1[0]
    assert any("seed=0" in ln and "finished" in ln for ln in rows)

    assert main(argv) == 0  # the same command again: only the cancelled point runs
    out = capsys.readouterr().out
    assert "1 finished (skipped)" in out and out.count("trained ") == 1
    assert done.read_bytes() == done_bytes
    dirs = find_run_dirs(d / "runs")
    assert len(dirs) == 2 and all(len(v) == 1 for v in dirs.values())
    (table,) = build_tables(collect_records(d / "records"))
    assert [r.seeds for r in table.rows] == [(0, 1)]


def _stable(record: Any) -> dict:
    """A record (a dict or a typed Record) without what differs between two runs of the same
    computation."""
    out = json.loads(json.dumps(record.to_dict() if hasattr(record, "to_dict") else record))
    for key in ("run_id", "started_at", "finished_at", "wall_time_s", "hardware"):
        out.pop(key, None)
    out["eval"].pop("timing_s"), out["eval"].pop("points_per_s")
    out["checkpoint"].pop("path")  # its sha256 stays: the same weights
    return out


def test_usr2_preemption_checkpoints_requeues_and_resumes(cluster, tmp_path, teacher):
    """Through the Python API: the signal Slurm sends before a time limit or a preemption."""
    from ardbench import api
    from ardbench.protocols import RunConfig
    from ardbench.slurm import SlurmOptions, follow, submit_slurm

    sets = ("train_subset=512", *TINY[1:])
    grid = Grid(
        ("rslad",), recipes=("demo",), teachers=(teacher,), settings={"epochs": 3}, sets=sets
    )
    (point,) = resolve_points(grid)
    sweep = SweepDir(tmp_path / "sw")
    options = SlurmOptions(gpus_per_run=0, cpus_per_run=1, mem_gb=1)
    sub = submit_slurm(sweep, [point], options)
    (job_id,) = sub.job_ids
    log = _wait_for(
        "the first epoch", lambda: [p for p in (sweep.runs).glob("*/log.jsonl") if p.read_text()]
    )[0]
    assert not (log.parent / "record.json").exists()
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    (end,) = follow(sweep, {point.key: job_id}, [point], poll_s=0.5)
    assert end.status == "resumed", end  # the requeued task found its checkpoint
    assert "Requeued job" in Path(end.log or "").with_suffix(".out").read_text()
    run_dir = Path(end.run_dir or "")
    assert run_dir == log.parent  # resumed in place, no second directory
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2, 3]
    restarts = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    assert "Restarts=1" in restarts

    cfg = RunConfig.from_dict(point.config)
    reference = api.train_config(cfg, runs=tmp_path / "ref", progress=False, threads=1)
    resumed = json.loads((run_dir / "record.json").read_text())
    assert _stable(resumed) == _stable(reference.record)
    losses = [json.loads(x)["losses"] for x in (reference.directory / "log.jsonl").open()]
    assert [json.loads(x)["losses"] for x in log.open()] == losses


def test_a_failing_task_shows_its_error_and_log_in_status(cluster, tmp_path, capsys):
    d = tmp_path / "sw"
    argv = _argv(d, f"small_cnn:{tmp_path / 'missing.pt'}", seeds="0", methods="rslad")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "missing.pt" in err and "1 task(s) did not finish" in err
    assert main([*argv, "--status"]) == 0
    captured = capsys.readouterr()
    (line,) = [ln for ln in captured.err.splitlines() if ln.startswith("failed")]
    assert "rslad seed=0" in line and "missing.pt" in line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and log.parent == (d / "jobs").resolve()
    assert "Traceback" in log.read_text()  # the full story is in the log
    assert "failed" in [ln for ln in captured.out.splitlines() if "seed=0" in ln][0]


def test_resource_flags_reach_the_job(cluster, tmp_path, teacher, capsys):
    d = tmp_path / "sw"
    argv = _argv(d, teacher, seeds="0", methods="rslad")
    argv += ["--partition", "debug", "--time", "7", "--mem-gb", "1.5", "--setup", "echo setup-ran"]
    argv += ["--setup", "export ARD_MARK=1"]
    assert main(argv) == 0
    capsys.readouterr()
    ((key, job),) = _jobs(d).items()
    array = job["job_id"].split("_")[0]
    script = (d / "jobs" / f"{array}_submission.sh").read_text().splitlines()
    for flag in ("--partition=debug", "--time=7", "--mem=1536MB", "--cpus-per-task=1"):
        assert f"#SBATCH {flag}" in script
    assert not [ln for ln in script if "--gpus" in ln]  # --gpus-per-run 0: no GPU line at all
    shown = subprocess.run(
        ["scontrol", "show", "job", job["job_id"]], capture_output=True, text=True, check=True
    ).stdout
    assert "TimeLimit=00:07:00" in shown and "Partition=debug" in shown
    assert "MinMemoryNode=1.50G" in shown and "NumCPUs=1" in shown
    out_log = Path(job["log"]).with_suffix(".out").read_text()
    assert out_log.startswith("setup-ran")  # the setup lines ran before the run
    record = json.loads(next((d / "runs").glob("*/record.json")).read_text())
    assert record["hardware"]["torch_threads"] == 1  # the task's threads = its CPUs
    assert key in find_run_dirs(d / "runs")


def test_the_defaults_fit_the_cluster_and_every_record_comes_back(cluster, tmp_path, teacher):
    """No resource flag: the defaults are fitted to the node (no GPUs here, 2 CPUs)."""
    d = tmp_path / "sw"
    argv = _argv(d, teacher, seeds="0", methods="rslad", resources=False)
    assert main(argv) == 0
    ((key, job),) = _jobs(d).items()
    script = (d / "jobs" / f"{job['job_id'].split('_')[0]}_submission.sh").read_text()
    cpus = min(8, os.cpu_count() or 1)
    assert f"#SBATCH --cpus-per-task={cpus}" in script.splitlines()
    assert "--gpus" not in script and "#SBATCH --mem=" in script
    assert key in find_run_dirs(d / "runs") and len(list((d / "records").glob("*.json"))) == 1


def _interrupt(argv: list[str], d: Path, ready: Any) -> subprocess.CompletedProcess:
    """Start ``ardbench *argv``, wait for ``ready()``, then Ctrl-C its process group (what a
    terminal does: the sweep and every process it started get SIGINT)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardbench", *argv],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for("the sweep to start its jobs", lambda: ready() or proc.poll() is not None)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_on_a_slurm_sweep_is_one_line_and_the_jobs_keep_running(cluster, tmp_path, teacher):
    d = tmp_path / "sw"
    argv = _argv(d, teacher, seeds="0", methods="rslad")
    done = _interrupt(argv, d, lambda: _jobs(d))
    ((_, job),) = _jobs(d).items()
    try:
        assert done.returncode == 130
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, done.stderr
        assert "keep running" in lines[0] and f"scancel {job['job_id'].split('_')[0]}" in lines[0]
        assert "ardbench sweep --dir" in lines[0]
        # slurmdbd records a job asynchronously (a just-submitted one may not be in sacct
        # yet), and an array's task shows as 58_[0] pending, 58_0 running: match the array
        array = job["job_id"].split("_")[0]

        def states() -> dict[str, str]:
            return {j: st for j, st in _sacct(array).items() if j.split("_")[0] == array}

        listed = _wait_for("sacct to list the job", states, timeout=60)
        assert set(listed.values()) <= {"PENDING", "RUNNING"}, listed
    finally:
        subprocess.run(["scancel", job["job_id"]], check=False)
