"""A sweep's results: copies of its finished points' records and their leaderboard tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .sweep import Point, SweepDir

__all__ = ["collect_records", "render_leaderboard"]


def collect_records(sweep: SweepDir, points: Sequence[Point]) -> list[Path]:
    """Copy the finished points' records into ``DIR/records/`` (identical copies are left
    alone; records are immutable); returns the record files of the grid's finished runs."""
    from .results.records import RECORD_FILENAME, load_record, record_bytes, write_record

    out = []
    for state, run_dir in sweep.status(points).values():
        if state != "finished" or run_dir is None:
            continue
        record = load_record(run_dir / RECORD_FILENAME)
        dest = sweep.records / f"{record['run_id']}.json"
        if not dest.is_file() or record_bytes(load_record(dest)) != record_bytes(record):
            if dest.is_file():
                dest.unlink()  # a stale copy of another record with this run id
            write_record(dest, record)
        out.append(dest)
    return out


def render_leaderboard(sweep: SweepDir, points: Sequence[Point]) -> dict[str, list[str]]:
    """The leaderboard tables of the sweep's finished runs, in ``DIR/leaderboard/``, each with
    its scatter plot."""
    from .plots import draw_table_plots
    from .results.leaderboard import collect_records as read_records
    from .results.leaderboard import write_leaderboard

    sweep.records.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in collect_records(sweep, points)}
    for stale in sweep.records.glob("*.json"):  # records of points no longer in the grid
        if stale.name not in wanted and not stale.name.endswith(".eval.json"):
            stale.unlink()
    report = write_leaderboard(sweep.records, sweep.leaderboard)
    report["written"] += draw_table_plots(
        read_records(sweep.records), sweep.leaderboard, removed=report["removed"]
    )
    return report
