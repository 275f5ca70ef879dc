"""``ardbench sweep``: the local executor end to end (parallel jobs, skip, kill and resume),
the Slurm job array's script, and the grid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from ardbench.cli import main
from ardbench.errors import ArdbenchError, ConfigError
from ardbench.executors import jobs_threads, visible_gpus
from ardbench.results.leaderboard import collect_records
from ardbench.results.tables import build_tables
from ardbench.sweep import Grid, SweepDir, find_run_dirs, grid_from_yaml, parse_seeds
from ardbench.sweep import resolve_points as points_of

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "train_subset=128", "--set", "probe=32", "--set", "eval.n_examples=64"]
TINY += ["--set", "attack.steps=1"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A fixed teacher for every point: a fresh `small_cnn` spec would be initialised from each
    run's seed, a different teacher (and leaderboard table) per seed."""
    from ardbench.models import build_arch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch.save(build_arch("small_cnn", 10).state_dict(), path)
    return f"small_cnn:{path}"


def _grid_args(
    d: Path, teacher: str, epochs: int, methods: str = "rslad,ard", seeds: str = "0,1"
) -> list[str]:
    return [
        "sweep",
        "--dir",
        str(d),
        "--methods",
        methods,
        "--seeds",
        seeds,
        "--recipes",
        "demo",
        "--teachers",
        teacher,
        "--epochs",
        str(epochs),
        *TINY,
    ]


def _intervals(records: list[dict]) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in records
    ]


def _max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_local_sweep_runs_in_parallel_renders_and_skips_finished(tmp_path, teacher, capsys):
    d = tmp_path / "sw"
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"methods: [rslad, ard]\nseeds: 0-1\nrecipe: demo\nteachers: ['{teacher}']\n"
        "epochs: 1\nset: {train_subset: 128, probe: 32, eval.n_examples: 64, attack.steps: 1}\n"
    )
    assert main(["sweep", str(grid), "--dir", str(d), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 new" in out and out.count("trained ") == 4

    points = points_of(Grid(**grid_from_yaml(grid)))
    dirs = find_run_dirs(d / "runs")
    assert set(dirs) == {p.key for p in points} and all(len(v) == 1 for v in dirs.values())
    records = [json.loads((v[0] / "record.json").read_text()) for v in dirs.values()]
    # two jobs at once, never more; each with the threads its share of the cores gives
    assert _max_overlap(_intervals(records)) == 2
    assert {r["hardware"]["torch_threads"] for r in records} == {jobs_threads(None, 2)}
    assert len(list((d / "jobs").glob("*_log.err"))) == 4
    # the sweep's leaderboard: one table, a row per method with both seeds
    (table,) = build_tables(collect_records(d / "records"))
    assert sorted((r.method, r.seeds) for r in table.rows) == [("ard", (0, 1)), ("rslad", (0, 1))]
    assert (d / "leaderboard" / table.relpath).is_file()
    assert (d / "leaderboard" / "README.md").is_file()
    manifest = json.loads((d / "sweep.json").read_text())
    assert [p["key"] for p in manifest["points"]] == [p.key for p in points]

    # rerun: everything is finished, nothing is submitted
    stamps = {p: p.stat().st_mtime_ns for p in (d / "runs").glob("*/record.json")}
    assert main(["sweep", str(grid), "--dir", str(d), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "4 finished (skipped)" in out and "started" not in out
    assert {p: p.stat().st_mtime_ns for p in (d / "runs").glob("*/record.json")} == stamps
    # a grown grid runs only the new point; --status shows it without running anything
    assert main(["sweep", str(grid), "--dir", str(d), "--seeds", "0-2", "--status"]) == 0
    out = capsys.readouterr().out
    assert "4 finished (skipped), 0 interrupted (resumed), 2 new" in out
    assert len(list((d / "runs").iterdir())) == 5  # 4 runs and the lock directory


def test_killed_sweep_resumes_skipping_the_finished_run(tmp_path, teacher, capsys):
    d = tmp_path / "sw"
    args = _grid_args(d, teacher, epochs=3, methods="rslad", seeds="0-2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardbench", *args, "--parallel", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the jobs with it
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            finished = list((d / "runs").glob("*/record.json"))
            started = [
                p.parent
                for p in (d / "runs").glob("*/checkpoint.pt")
                if not (p.parent / "record.json").exists()
            ]
            if finished and started:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no run finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, submitit's controller and the job
        proc.wait()
    (done,) = finished
    (interrupted,) = started
    done_bytes = done.read_bytes()
    assert not (interrupted / "record.json").exists()
    epochs_before = len((interrupted / "log.jsonl").read_text().splitlines())
    assert 1 <= epochs_before < 3

    assert main([*args, "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 finished (skipped), 1 interrupted (resumed), 1 new" in out
    assert out.count("resumed ") == 1 and out.count("trained ") == 1
    assert done.read_bytes() == done_bytes  # the finished run was not touched
    dirs = find_run_dirs(d / "runs")
    assert len(dirs) == 3 and all(len(v) == 1 for v in dirs.values())  # resumed in place
    assert (interrupted / "record.json").is_file()
    assert [r["epoch"] for r in map(json.loads, (interrupted / "log.jsonl").open())] == [1, 2, 3]
    assert len(collect_records(d / "records")) == 3


def test_slurm_dry_run_writes_the_job_array_script(tmp_path, teacher, capsys):
    d = tmp_path / "sw"
    args = _grid_args(d, teacher, epochs=1)
    slurm = ["--executor", "slurm", "--partition", "gpu", "--time", "90", "--gpus-per-run", "1"]
    slurm += ["--cpus-per-run", "4", "--parallel", "2", "--setup", "module load cuda/12"]
    slurm += ["--mem-gb", "32", "--account", "lab"]
    assert main([*args, *slurm, "--dry-run"]) == 0
    script = (d / "slurm" / "sweep_array.sbatch").read_text()
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for flag in (
        "--array=0-3%2",
        "--partition=gpu",
        "--time=90",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--job-name=ardbench-sweep",
        "--mem=32GB",
        "--account=lab",
        "--signal=USR2@90",  # submitit's warning before the time limit: requeue, then resume
    ):
        assert f"#SBATCH {flag}" in lines
    assert f"#SBATCH --output={(d / 'jobs').resolve()}/%A_%a_0_log.out" in lines
    setup = lines.index("module load cuda/12")
    assert lines[setup + 1] == "export OMP_NUM_THREADS=4"
    command = [ln for ln in lines if "submitit.core._submit" in ln]
    assert len(command) == 1 and command[0].startswith("srun ")
    assert str((d / "jobs").resolve()) in command[0]
    index = json.loads((d / "slurm" / "points.json").read_text())
    grid = Grid(
        methods=("rslad", "ard"),
        seeds=(0, 1),
        recipes=("demo",),
        teachers=(teacher,),
        settings={"epochs": 1},
        sets=tuple(TINY[1::2]),
    )
    assert [e["key"] for e in index] == [p.key for p in points_of(grid)]
    assert [e["array_index"] for e in index] == [0, 1, 2, 3]
    assert not (d / "runs").exists()  # nothing ran


@pytest.mark.skipif(shutil.which("srun") is not None, reason="a Slurm cluster is here")
def test_slurm_without_a_cluster_is_a_one_line_error(tmp_path, teacher, capsys):
    args = _grid_args(tmp_path / "sw", teacher, epochs=1)
    assert main([*args, "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "cannot submit to Slurm here" in err and "--dry-run" in err


def test_a_failing_run_is_reported_and_the_sweep_exits_1(tmp_path, capsys):
    d = tmp_path / "sw"
    argv = ["sweep", "--dir", str(d), "--methods", "rslad", "--recipes", "demo", *TINY]
    argv += ["--teachers", f"small_cnn:{tmp_path / 'missing.pt'}", "--epochs", "1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "failed" in captured.err and "missing.pt" in captured.err
    assert "1 run(s) failed" in captured.err


def test_grid_parsing_and_points(tmp_path):
    assert parse_seeds("0-2,5") == (0, 1, 2, 5) and parse_seeds([3, "1,3"]) == (3, 1)
    with pytest.raises(ConfigError, match="not a seed"):
        parse_seeds("a")
    grid = tmp_path / "g.yaml"
    grid.write_text("methods: [trades]\nseeds: [0]\nset: [beta=3]\nrecipes: demo\n")
    spec = grid_from_yaml(grid)
    assert spec["sets"] == ("beta=3",) and spec["recipes"] == ("demo",)
    grid.write_text("methods: [trades]\nseed: 0\n")
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        grid_from_yaml(grid)
    # a teacher-free method ignores the teachers axis: one point per seed, not per teacher
    pts = points_of(
        Grid(methods=("pgd_at", "kd"), seeds=(0,), recipes=("demo",), teachers=("a", "b"))
    )
    assert sorted(p.method for p in pts) == ["kd", "kd", "pgd_at"]
    assert len({p.key for p in pts}) == 3


def test_gpus_and_threads(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus("1") == ["5"] and visible_gpus("0,1") == ["3", "5"]
    assert visible_gpus("none") == []
    with pytest.raises(ArdbenchError, match="only 2 GPU"):
        visible_gpus("2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus("0,2") == ["0", "2"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert jobs_threads(None, 2) == 3 and jobs_threads(2, 4) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    from ardbench.threads import physical_cores

    assert jobs_threads(None, 2) == max(1, physical_cores() // 2)


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    sweep = SweepDir(tmp_path)
    with sweep.locked():
        with pytest.raises(ArdbenchError, match="another `ardbench sweep`"):
            with SweepDir(tmp_path).locked():
                pass


def test_sigterm_stops_the_sweep_and_its_jobs_even_with_sigint_ignored(tmp_path, teacher):
    """A sweep started in the background by a script ignores SIGINT (and so do its jobs);
    SIGTERM must still stop it and leave no job running."""
    d = tmp_path / "sw"
    args = _grid_args(d, teacher, epochs=50, methods="rslad", seeds="0")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardbench", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.time() + 300
        while not list((d / "runs").glob("*/log.jsonl")):  # the job is training
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        (log,) = (d / "jobs").glob("*_0_log.err")
        controller = int(log.name.split("_")[0])
        task = [
            int(c)
            for c in Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
        ]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in err
    time.sleep(0.5)
    for pid in [controller, *task]:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_ctrl_c_on_a_local_sweep_is_one_line_and_stops_its_jobs(tmp_path, teacher):
    """A terminal's Ctrl-C reaches the whole process group: the sweep, submitit's controller
    and the job. One line comes back (how to resume), no job traceback, no job left."""
    d = tmp_path / "sw"
    args = _grid_args(d, teacher, epochs=50, methods="rslad", seeds="0")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ardbench", *args],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while not list((d / "runs").glob("*/checkpoint.pt")):  # an epoch is checkpointed
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        (log,) = (d / "jobs").glob("*_0_log.err")
        controller = int(log.name.split("_")[0])
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130 and len(lines) == 1, err
    assert lines[0].startswith("interrupted") and "resume with: ardbench sweep --dir" in lines[0]
    assert "Traceback" not in log.read_text()
    time.sleep(0.5)
    assert (
        not Path(f"/proc/{controller}").exists()
        or " Z " in Path(f"/proc/{controller}/stat").read_text()
    )


def test_a_points_job_is_idempotent(tmp_path, teacher):
    """A requeued or duplicated job trains once: the second call skips with the same run
    directory and leaves the record's bytes alone; an interrupted directory resumes."""
    from ardbench.protocols import RunConfig
    from ardbench.sweep import run_point
    from ardbench.train.trainer import train

    grid = Grid(
        methods=("rslad",), seeds=(0, 1), recipes=("demo",), teachers=(teacher,),
        settings={"epochs": 2}, sets=tuple(TINY[1::2]),
    )  # fmt: skip
    first, second = points_of(grid)
    runs = tmp_path / "runs"
    done = run_point(first.key, first.config, runs, threads=1, progress=False)
    record = Path(done["run_dir"]) / "record.json"
    before = record.read_bytes()
    again = run_point(first.key, first.config, runs, threads=1, progress=False)
    assert (done["status"], again["status"]) == ("trained", "skipped")
    assert again["run_dir"] == done["run_dir"] and record.read_bytes() == before

    part = train(RunConfig.from_dict(second.config), runs_dir=runs, progress=False,
                 stop_after_epoch=1)  # fmt: skip
    assert not (part.run_dir / "record.json").exists()
    resumed = run_point(second.key, second.config, runs, threads=1, progress=False)
    assert resumed["status"] == "resumed" and Path(resumed["run_dir"]) == part.run_dir
    epochs = [json.loads(x)["epoch"] for x in (part.run_dir / "log.jsonl").open()]
    assert epochs == [1, 2]
    dirs = find_run_dirs(runs)
    assert sorted(len(v) for v in dirs.values()) == [1, 1]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seeds", "5-2"], "empty range"),
        (["--seeds", "0-99999999"], "more than 10000 seeds"),
        (["--parallel", "0"], "--parallel must be at least 1"),
        (["--parallel", "-1"], "--parallel must be at least 1"),
        (["--executor", "slurm", "--cpus-per-run", "0"], "--cpus-per-run must be at least 1"),
        (["--executor", "slurm", "--mem-gb", "-1"], "--mem-gb must be at least 0"),
    ],
)
def test_bad_sweep_settings_are_one_line_errors_before_any_work(tmp_path, capsys, flags, message):
    d = tmp_path / "sw"
    assert main(["sweep", "--dir", str(d), "--methods", "rslad", "--recipes", "demo", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not d.exists()  # no sweep.json, no lock, nothing


def test_a_sweep_file_asking_for_1e8_seeds_is_refused(tmp_path, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("methods: [rslad]\nseeds: 0-99999999\nrecipes: [demo]\n")
    assert main(["sweep", str(grid), "--dir", str(tmp_path / "sw")]) == 2
    assert "more than 10000 seeds" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the grid has 12000 points"):
        points_of(Grid(methods=("rslad", "ard"), seeds=tuple(range(6000))))


def test_slurm_memory_default_and_no_gpu_line(tmp_path):
    from ardbench.executors import SlurmOptions

    assert SlurmOptions(cpus_per_run=8).parameters(2)["mem"] == "32GB"  # 4 GB per CPU
    assert SlurmOptions(cpus_per_run=1, mem_gb=1.5).parameters(2)["mem"] == "1536MB"
    assert "mem" not in SlurmOptions(mem_gb=0).parameters(2)  # the cluster's own default
    assert "gpus_per_node" not in SlurmOptions(gpus_per_run=0).parameters(2)
    assert SlurmOptions(gpus_per_run=2).parameters(2)["gpus_per_node"] == 2
