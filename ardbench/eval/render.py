"""``ardbench eval``'s rich rendering of an :class:`~ardbench.eval.result.EvalResult`."""

from __future__ import annotations

from typing import Any

from ..protocols.columns import COLUMN_TITLES, COLUMNS, get_column
from ..protocols.eps import format_eps
from .result import EvalResult

__all__ = ["render_eval"]


def _format_step(step: float) -> str:
    k = step * 255
    return f"{k:.4g}/255" if abs(k - round(k, 3)) < 1e-6 else f"{step:.4g}"


def render_eval(result: EvalResult, console: Any = None) -> None:
    """Print the result as a rich table (plus AA breakdown, cross-check, warnings).

    Per column: accuracy, the worst class's accuracy and that class (point-wise worst case,
    as the accuracy), the step, and the time it took."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    title = (
        f"{(result.model or {}).get('spec', 'model')} — {result.n_examples} points, "
        f"{result.norm} eps {format_eps(result.eps)}, seed {result.seed}"
    )
    table = Table(title=title)
    for name, justify in (
        ("column", "left"),
        ("accuracy %", "right"),
        ("worst class %", "right"),
        ("worst class", "right"),
        ("step", "right"),
        ("steps", "right"),
        ("time s", "right"),
        ("points/s", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for column, acc in result.accuracy.items():
        s = result.settings.get(column, {})
        step = s.get("step")
        label = get_column(column).steps_label if column in COLUMNS else None
        table.add_row(
            COLUMN_TITLES.get(column, column),
            f"{100 * acc:.2f}",
            f"{100 * result.worst_class[column]:.2f}",
            str(result.worst_class_index(column)),
            _format_step(step) if isinstance(step, float) else "—",
            label or str(s.get("steps", "—")),
            f"{result.timing_s.get(column, 0.0):.1f}",
            f"{result.points_per_s.get(column, 0.0):.1f}",
        )
    console.print(table)
    if result.aa_breakdown:
        secs = result.settings.get("aa", {}).get("seconds_per_attack", {})
        steps = " → ".join(
            f"{k.upper()} {100 * v:.2f}%" + (f" ({secs[k]:.0f} s)" if k in secs else "")
            for k, v in result.aa_breakdown.items()
        )
        console.print(f"AutoAttack breakdown (robust accuracy after each attack): {steps}")
    if result.cross_check:
        cc = result.cross_check
        line = (
            f"cross-check {cc['tool']}: clean {100 * cc['clean']:.2f}% "
            f"(ardbench {100 * cc.get('ardbench_clean', float('nan')):.2f}%), "
            f"AA {100 * cc['aa']:.2f}%"
        )
        if "ardbench_aa" in cc:
            line += f" (ardbench {100 * cc['ardbench_aa']:.2f}%)"
            line += " — [green]agree[/]" if cc.get("agree") else " — [yellow]differ[/]"
        console.print(line)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
