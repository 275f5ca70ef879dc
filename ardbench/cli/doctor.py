"""``ardbench doctor``: versions, devices, threads, folders and caches; the GPU checks on CUDA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from ..errors import ConfigError
from .console import console, err_console


def add_doctor_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="what this machine has (versions, devices, caches); on CUDA, the GPU checks",
        description="Report versions (torch, CUDA, pyautoattack, robustbench), devices, "
        "threads, the cache, data and model folders and what is cached. On a CUDA device it "
        "also runs the GPU checks: the captured training step against the eager one (a small "
        "model and RSLAD's ResNet-18 <- WRN-34-10 shapes), the evaluator's compliance checks "
        "and a short images/s benchmark, eager vs captured (a minute or two). Attach the "
        "--json report to an issue.",
    )
    p.add_argument("--json", dest="json_out", metavar="PATH", help="also write the report here")
    p.add_argument("--device", help="the CUDA device for the GPU checks (default cuda)")
    p.add_argument(
        "--no-gpu-checks", dest="gpu", action="store_false", help="report only, even on CUDA"
    )
    p.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from ..doctor import build_report

    out = Path(args.json_out) if args.json_out else None
    if out is not None and (out.is_dir() or out.parent.is_file()):
        raise ConfigError(f"--json {out}: cannot write a file there", hint="give a file path")
    report = build_report(
        gpu=args.gpu, device=args.device, log=lambda m: err_console.print(f"[dim]{m}[/]")
    )
    render(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        console.print(Text(f"report written to {out}"))
    checks = report["gpu_checks"]
    return 0 if checks.get("skipped") or checks.get("passed") else 1


def render(report: dict[str, Any]) -> None:
    table = Table(title="ardbench doctor", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    v = report["versions"]
    for key, value in v.items():
        table.add_row(key, Text(str(value) if value is not None else "not installed"))
    d = report["devices"]
    table.add_row("cpu", Text(f"{d['cpu_count']} cores, {d['platform']}"))
    if not d["cuda"]:
        table.add_row("cuda", Text("no CUDA device"))
    for gpu in d["cuda"] or []:
        table.add_row(
            f"cuda:{gpu['index']}",
            Text(f"{gpu['name']}, {gpu['memory_gib']} GiB, sm {gpu['capability']}"),
        )
    t = report["threads"]
    table.add_row(
        "threads",
        Text(f"torch {t['torch_threads']} (OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'})"),
    )
    f = report["folders"]
    for key in ("cache", "data", "models"):
        entry = f[key]
        state = "" if entry["exists"] else " (not there yet)"
        table.add_row(key, Text(f"{entry['path']}{state}  [${entry['env']}]"))
    cached = f["cached"]
    for key, items in cached.items():
        table.add_row(f"cached {key}", Text(", ".join(items) if items else "none"))
    console.print(table)
    checks = report["gpu_checks"]
    if checks.get("skipped"):
        console.print(Text(f"GPU checks skipped: {checks['skipped']}"))
        return
    for c in checks["results"]:
        mark = "ok  " if c["passed"] else "FAIL"
        detail = _summary(c)
        console.print(Text(f"{mark} {c['check']} ({c['seconds']} s){detail}"))


def _summary(c: dict[str, Any]) -> str:
    if "error" in c:
        return f": {c['error']}"
    if "images_per_s" in c:
        r = c["images_per_s"]
        return f": eager {r['eager']}, captured {r['captured']} images/s (x{c['speedup']})"
    if "max_rel_loss_diff" in c:
        off = f"; graph off: {c['graph_off']}" if c["graph_off"] else ""
        return (
            f": losses within {c['max_rel_loss_diff']:.2g}, updates within "
            f"{c['max_rel_update_diff']:.2g} (relative){off}"
        )
    failed = [k for k, r in c.get("results", {}).items() if not r["passed"]]
    return f": failed {', '.join(failed)}" if failed else ""
