"""``ardbench sweep``: a grid of runs, resumable, locally in parallel or as a Slurm array."""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from rich.table import Table

from .console import console, err_console
from .run import add_force_argument, add_set_argument, add_threads_argument

EPILOG = """\
examples:
  ardbench sweep --methods rslad,ard --seeds 0,1 --recipes demo --parallel 2 --dir sweeps/demo
  ardbench sweep grid.yaml --parallel 4 --gpus 0,1          # 4 runs at once, 2 per GPU
  ardbench sweep grid.yaml --executor slurm --partition gpu --time 600 --dry-run
  ardbench sweep grid.yaml --executor slurm --partition gpu --setup "module load cuda/12"

grid.yaml:
  methods: [rslad, ard]
  seeds: 0-2
  recipes: [demo]
  set: {train.epochs: 4, train_subset: 512}

Rerunning the same command skips finished runs and resumes interrupted ones; the tables of
the grid's finished runs are rendered in DIR/leaderboard/ at the end. On Slurm the command
follows its job array until every task has ended (Ctrl-C stops following, not the jobs;
--no-wait submits and returns); rerunning it follows the tasks still queued or running and
submits the rest.
"""


def add_sweep_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid (methods x seeds x ...) locally in parallel or as a Slurm job array",
        description="Resolve every point of a grid (methods x recipes x protocols x teachers x "
        "students x seeds), run the ones not finished (resuming interrupted ones) with an "
        "executor, then render the leaderboard tables of the grid's runs. A run is identified "
        "by its resolved config's hash (seed included).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", nargs="?", metavar="GRID_YAML", help="a sweep file (flags override it)")
    g = p.add_argument_group("the grid (comma-separated lists)")
    g.add_argument("--methods", help="e.g. rslad,ard")
    g.add_argument("--seeds", help="e.g. 0,1,2 or 0-4 (default 0)")
    g.add_argument("--recipes", "--recipe", dest="recipes", help="recipe names or paths")
    g.add_argument("--protocols", "--protocol", dest="protocols", help="named protocols")
    g.add_argument("--teachers", "--teacher", dest="teachers", help="teacher specs")
    g.add_argument("--students", "--student", dest="students", help="student specs")
    g.add_argument("--dataset")
    g.add_argument("--data-dir")
    g.add_argument("--device", help="auto (default), cpu, cuda")
    g.add_argument("--epochs", type=int)
    g.add_argument("--download", action="store_true", default=None)
    add_set_argument(g, "an override for every point, as ardbench run --set")
    p.add_argument("--dir", default="sweep", help="the sweep directory (default ./sweep)")
    p.add_argument("--executor", choices=["local", "slurm"], default="local")
    p.add_argument(
        "--parallel",
        type=int,
        help="local: runs at once (default 1); slurm: array tasks at once (default all)",
    )
    p.add_argument(
        "--gpus",
        default="auto",
        help="local: GPUs the runs use, by index (0,1), auto (all visible) or none; run slot i "
        "gets GPU i mod len(GPUs) alone (CUDA_VISIBLE_DEVICES), so --parallel above the "
        "number of GPUs shares them",
    )
    add_threads_argument(p, "the physical cores divided among the concurrent runs")
    add_force_argument(p)
    s = p.add_argument_group("slurm")
    s.add_argument("--partition")
    s.add_argument("--time", type=int, default=24 * 60, help="minutes per run (default 1440)")
    s.add_argument(
        "--gpus-per-run",
        type=int,
        help="GPUs per run (default 1 where the partition's nodes have GPUs, else 0)",
    )
    s.add_argument(
        "--cpus-per-run",
        type=int,
        help="CPUs per run, also its torch threads (default 8, at most a node's CPUs)",
    )
    s.add_argument(
        "--mem-gb",
        type=float,
        help="memory per run (default 4 GB per CPU of the run, at most a CPU's share of a node; "
        "0: the cluster's default)",
    )
    s.add_argument("--account")
    s.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="CMD",
        help="shell line before each run, e.g. 'module load cuda/12' or 'conda activate ard' "
        "(repeatable)",
    )
    s.add_argument(
        "--no-wait", action="store_true", help="submit and return instead of following the jobs"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="local: show the plan; slurm: also write the job array's script to DIR/slurm/",
    )
    p.add_argument("--status", action="store_true", help="show each point's state and stop")
    p.set_defaults(func=_cmd_sweep)


def _grid(args: argparse.Namespace) -> Any:
    from ..errors import ConfigError
    from ..sweep import Grid, _names, grid_from_yaml, parse_seeds

    spec: dict[str, Any] = grid_from_yaml(args.grid) if args.grid else {"settings": {}}
    for key in ("methods", "recipes", "protocols", "teachers", "students"):
        if getattr(args, key):
            spec[key] = _names(getattr(args, key), f"--{key}")
    if args.seeds:
        spec["seeds"] = parse_seeds(args.seeds)
    for key in ("dataset", "data_dir", "device", "epochs", "download"):
        if getattr(args, key) is not None:
            spec["settings"][key] = getattr(args, key)
    spec["sets"] = tuple(spec.get("sets", ())) + tuple(args.sets)
    if not spec.get("methods"):
        raise ConfigError("no methods to sweep", hint="pass --methods a,b or methods: in the file")
    return Grid(**spec)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..sweep import SweepDir, resolve_points

    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel must be at least 1, got {args.parallel}")
    options = _slurm_options(args) if args.executor == "slurm" else None
    grid = _grid(args)
    points = resolve_points(grid, force=args.force)  # every config validated before any run
    sweep = SweepDir(args.dir)
    args.interrupt_hint = f"resume with: {_command(args)}"
    with sweep.locked():
        sweep.write_manifest(grid, points)
        status = sweep.status(points)
        todo = [p for p in points if status[p.key][0] != "finished"]
        _print_plan(points, status, sweep, slurm=args.executor == "slurm" or args.status)
        if args.status or (args.dry_run and args.executor == "local"):
            return 0
        if options is not None:
            return _slurm(args, options, sweep, todo, points)
        failed = _local(args, sweep, todo) if todo else []
        _finish(sweep, points)
    if failed:
        err_console.print(
            f"[red]{len(failed)} run(s) failed[/]; fix the cause and rerun the same command "
            "(finished runs are skipped, interrupted ones resume)",
            soft_wrap=True,
        )
        return 1
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reruns this sweep (what the user typed, without --status)."""
    import shlex
    import sys

    argv = [a for a in getattr(args, "argv", None) or sys.argv[1:] if a != "--status"]
    return shlex.join(["ardbench", *argv])


def _slurm_options(args: argparse.Namespace) -> Any:
    from ..slurm import SlurmOptions, node_defaults

    gpus, cpus, mem = args.gpus_per_run, args.threads or args.cpus_per_run, args.mem_gb
    if gpus is None or cpus is None or mem is None:  # fit the defaults to the partition
        found = node_defaults(args.partition)
        gpus = int(found["gpus"]) if gpus is None else gpus
        cpus = int(found["cpus"]) if cpus is None else cpus
        mem = found["mem_gb_per_cpu"] * max(1, cpus) if mem is None else mem
    return SlurmOptions(
        partition=args.partition,
        time_min=args.time,
        gpus_per_run=gpus,
        cpus_per_run=cpus,
        parallel=args.parallel,
        mem_gb=mem,
        account=args.account,
        setup=tuple(args.setup),
    )


def _print_plan(points: list, status: dict, sweep: Any, slurm: bool = False) -> None:
    from ..sweep import read_task

    counts: dict[str, int] = {}
    for p in points:
        counts[status[p.key][0]] = counts.get(status[p.key][0], 0) + 1
    jobs = _slurm_states(sweep, points, status) if slurm else {}
    table = Table("point", "config hash", "state", title=f"sweep {sweep.root}")
    failures = []
    for p in points:
        state, run_dir = status[p.key]
        where = f" ({run_dir.name})" if run_dir is not None else ""
        job = jobs.get(p.key)
        task = read_task(sweep, p.key) if state != "finished" else None
        if job:  # the latest Slurm task of an unfinished point: pending, running, cancelled ...
            where += f", {job[1].lower()} (job {job[0]})"
        if task and task.get("status") == "failed":
            failures.append(f"failed   {p.label}: {task.get('error')} (log: {task.get('log')})")
            where += ", failed" if not job else ""
        table.add_row(p.label, p.key[:12], state + where)
    console.print(table)
    console.print(
        f"{len(points)} point(s): {counts.get('finished', 0)} finished (skipped), "
        f"{counts.get('interrupted', 0)} interrupted (resumed), {counts.get('new', 0)} new",
        highlight=False,
    )
    for line in failures:
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)


def _slurm_states(sweep: Any, points: list, status: dict) -> dict[str, tuple[str, str]]:
    """key -> (job id, Slurm state) of each unfinished point's latest task."""
    from ..errors import ArdbenchError
    from ..slurm import known_states, submitted_jobs

    entries = submitted_jobs(sweep)
    ids = {p.key: entries[p.key]["job_id"] for p in points if p.key in entries}
    ids = {k: j for k, j in ids.items() if status[k][0] != "finished"}
    if not ids:
        return {}
    try:
        states = known_states(sweep, ids)
    except ArdbenchError as exc:
        err_console.print(f"(no Slurm states: {exc})", highlight=False, soft_wrap=True)
        return {}
    return {k: (j, states[k]) for k, j in ids.items()}


def _local(args: argparse.Namespace, sweep: Any, todo: list) -> list:
    from ..executors import jobs_threads, run_local, visible_gpus

    parallel = args.parallel or 1
    gpus = visible_gpus(args.gpus)
    threads = jobs_threads(args.threads, min(parallel, len(todo)))
    console.print(
        f"running {len(todo)} run(s), {parallel} at a time, {threads} torch thread(s) each"
        + (f", GPUs {','.join(gpus)}" if gpus else ", no GPU")
        + f"; logs in {sweep.jobs}",
        highlight=False,
        soft_wrap=True,
    )
    t0 = time.perf_counter()

    def on_start(point: Any, job: Any, gpu: str | None) -> None:
        on_gpu = f", GPU {gpu}" if gpu is not None else ""
        console.print(f"started  {point.label} (job {job.job_id}{on_gpu})", highlight=False)

    def on_end(o: Any) -> None:
        if o.status == "failed":
            err_console.print(
                f"failed   {o.point.label}: {o.error} (log: {o.log})",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
            return
        acc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in o.metrics.items() if v is not None)
        console.print(f"{o.status:8} {o.point.label} in {o.wall_s:.0f}s: {acc}", highlight=False)

    args.interrupt_hint = (
        f"the running runs were stopped at their last finished epoch; resume with: {_command(args)}"
    )
    # SIGTERM (a batch system, `kill`) cancels the jobs like Ctrl-C does
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        outcomes = run_local(
            sweep,
            todo,
            parallel=parallel,
            gpus=gpus,
            threads=threads,
            on_start=on_start,
            on_end=on_end,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(
        f"{len(outcomes)} job(s) in {time.perf_counter() - t0:.0f}s wall time", highlight=False
    )
    return [o for o in outcomes if o.status in ("failed", "busy")]


def _slurm(args: argparse.Namespace, options: Any, sweep: Any, todo: list, points: list) -> int:
    from ..slurm import active_jobs, cancel_hint, follow, submit_slurm

    active = active_jobs(sweep, todo) if todo and not args.dry_run else {}
    new = [p for p in todo if p.key not in active]
    jobs = dict(active)
    if new:
        sub = submit_slurm(sweep, new, options, dry_run=args.dry_run)
        if sub.dry_run:
            console.print(
                f"wrote {sub.script} and {sub.points} (nothing submitted)", highlight=False
            )
            return 0
        jobs |= {p.key: j for p, j in zip(new, sub.job_ids, strict=True)}
        console.print(
            f"submitted job array {sub.array_id} ({len(new)} task(s), "
            f"{options.parallel or len(new)} at a time); logs in {sweep.jobs}",
            highlight=False,
            soft_wrap=True,
        )
    if active:
        console.print(f"following {len(active)} task(s) submitted earlier", highlight=False)
    if jobs and args.no_wait:
        console.print(
            f"not waiting: rerun `{_command(args)}` to follow the tasks and render the tables "
            f"(cancel them with `{cancel_hint(list(jobs.values()))}`)",
            highlight=False,
            soft_wrap=True,
        )
        return 0
    args.interrupt_hint = (
        f"the Slurm tasks keep running; follow them with `{_command(args)}`, "
        f"cancel them with `{cancel_hint(list(jobs.values()))}`"
    )
    t0 = time.perf_counter()
    ends = follow(sweep, jobs, todo, on_end=_print_end) if jobs else []
    if ends:
        console.print(
            f"{len(ends)} task(s) in {time.perf_counter() - t0:.0f}s wall time", highlight=False
        )
    _finish(sweep, points)
    bad = [e for e in ends if e.status not in ("trained", "resumed", "skipped")]
    if bad:
        err_console.print(
            f"[red]{len(bad)} task(s) did not finish[/]; fix the cause and rerun the same "
            "command (finished runs are skipped, interrupted ones resume)",
            soft_wrap=True,
        )
        return 1
    return 0


def _print_end(e: Any) -> None:
    if e.error:
        err_console.print(
            f"{e.status:9} {e.point.label} (job {e.job_id}): {e.error} (log: {e.log})",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        return
    acc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in (e.metrics or {}).items() if v is not None)
    console.print(f"{e.status:9} {e.point.label} (job {e.job_id}): {acc}", highlight=False)


def _finish(sweep: Any, points: list) -> None:
    from ..results.leaderboard import collect_records
    from ..results.tables import COLUMN_TITLES, build_tables
    from ..sweep_results import render_leaderboard

    sweep.records.mkdir(parents=True, exist_ok=True)
    report = render_leaderboard(sweep, points)
    records = collect_records(sweep.records)
    if not records:
        console.print("no finished runs yet: no tables", highlight=False)
        return
    for t in build_tables(records):
        columns = [c for c in COLUMN_TITLES if any(r.stats[c].mean is not None for r in t.rows)]
        table = Table("method", "recipe", "seeds", *(COLUMN_TITLES[c] for c in columns), "epochs")
        table.title = str(sweep.leaderboard / t.relpath)
        for r in t.rows:
            table.add_row(
                r.method,
                r.recipe_cell,
                str(r.runs),
                *(r.stats[c].cell(r.runs) for c in columns),
                ", ".join(map(str, r.epochs)),
            )
        console.print(table)
    console.print(
        f"leaderboard of {len(records)} run(s) in {sweep.leaderboard} "
        f"({len(report['written'])} file(s) written, {len(report['unchanged'])} unchanged)",
        highlight=False,
        soft_wrap=True,
    )
