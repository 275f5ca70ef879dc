"""A run page's per-epoch curves from its ``log.jsonl``: the loss terms the method returned and
the probe's clean / PGD accuracy on its held-out points, as inline SVG and as a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import RunInfo, finite
from .html import esc
from .svg import Series, line_chart

__all__ = ["curves_section"]


def _series(rows: Sequence[dict[str, Any]], block: str, scale: float = 1.0) -> list[Series]:
    names = sorted({k for r in rows for k in (r.get(block) or {}) if isinstance(k, str)})
    out = []
    for name in names:
        pts = [
            (float(r["epoch"]), v * scale)
            for r in rows
            if isinstance(r.get(block), dict) and (v := finite(r[block].get(name))) is not None
        ]
        if pts:
            out.append(Series(name, tuple(x for x, _ in pts), tuple(y for _, y in pts)))
    return out


def _table(rows: Sequence[dict[str, Any]], losses: list[Series], probe: list[Series]) -> str:
    head = '<th class="num">epoch</th><th class="num">lr</th>'
    head += "".join(f'<th class="num">{esc(s.name)}</th>' for s in losses)
    head += "".join(f'<th class="num">probe {esc(s.name)} (%)</th>' for s in probe)
    head += '<th class="num">time (s)</th>'
    body = []
    for r in rows:
        lr, t = finite(r.get("lr")), finite(r.get("epoch_time_s"))
        cells = [str(r["epoch"]), f"{lr:g}" if lr is not None else "—"]
        cells += [_get(r, "losses", s.name, "{:.4f}") for s in losses]
        cells += [_get(r, "probe", s.name, "{:.2f}", 100.0) for s in probe]
        cells.append(f"{t:.1f}" if t is not None else "—")
        body.append("<tr>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    return (
        f'<div class="scroll"><table id="epochs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _get(row: dict[str, Any], block: str, name: str, fmt: str, scale: float = 1.0) -> str:
    value = finite((row.get(block) or {}).get(name)) if isinstance(row.get(block), dict) else None
    return fmt.format(value * scale) if value is not None else "—"


def curves_section(info: RunInfo) -> str:
    head = "<h2>Training curves</h2>"
    if not info.log:
        return head + f'<p class="lead">{esc(info.log_note)}</p>'
    losses = _series(info.log, "losses")
    probe = [s for s in _series(info.log, "probe", 100.0) if s.name != "examples"]
    charts = []
    loss_svg = line_chart(losses, "epoch", "loss (per-epoch mean)", "loss terms per epoch")
    if loss_svg:
        charts.append(
            f"<div><figure>{loss_svg}<figcaption>The loss terms the method returned (weighted, "
            "as summed), mean over the epoch's steps.</figcaption></figure></div>"
        )
    probe_svg = line_chart(probe, "epoch", "probe accuracy (%)", "probe accuracy per epoch")
    if probe_svg:
        charts.append(
            f"<div><figure>{probe_svg}<figcaption>Accuracy on the probe's held-out training "
            "points after each epoch (clean and under a short PGD): a sanity check, not the "
            "result.</figcaption></figure></div>"
        )
    return head + f'<div class="cols">{"".join(charts)}</div>' + _table(info.log, losses, probe)
