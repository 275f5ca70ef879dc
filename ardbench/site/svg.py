"""Inline SVG charts: a scatter with error bars (clean vs robust accuracy per row) and line
charts (per-epoch curves). Written by hand so that the site needs no library and the bytes
depend only on the numbers (fixed formats, no ids from a counter shared across pages).

Labels of the scatter are placed greedily: each tries a ring of positions around its point
and takes the first that overlaps no earlier label, no point and stays inside the plot; a
label that finds none is left out and the point keeps its number (the table's rank) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .html import esc

__all__ = ["Point", "Series", "line_chart", "scatter"]

W, H = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 14, 46
PALETTE = ("#1f5fa8", "#c0392b", "#1b7a3a", "#8e44ad", "#d35400", "#2c3e50", "#16a085")
CHAR_W = 6.2  # average width of an 11 px sans-serif character


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    x_err: float
    y_err: float
    label: str
    mark: str  # short text drawn in place of a label that does not fit (the rank)


@dataclass(frozen=True)
class Series:
    name: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    span = max(hi - lo, 1e-9)
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step - 1e-9) * step
    out: list[float] = []
    v = first
    while v <= hi + 1e-9 and len(out) < 20:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _tick_text(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Frame:
    """Axes from data ranges to pixels, and the axes' markup."""

    def __init__(
        self, x_range: tuple[float, float], y_range: tuple[float, float], top: float = TOP
    ) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.top = top
        self.x_int = False  # whole-number x ticks only (epochs)

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / max(self.x1 - self.x0, 1e-12) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / max(self.y1 - self.y0, 1e-12) * (H - self.top - BOTTOM)

    def axes(self, x_title: str, y_title: str) -> list[str]:
        out = [
            f'<rect x="{LEFT}" y="{self.top}" width="{W - LEFT - RIGHT}" height="{H - self.top - BOTTOM}" '
            'fill="#fff" stroke="#c8ced5"/>'
        ]
        for v in _ticks(self.x0, self.x1):
            if self.x_int and v != int(v):
                continue
            x = _fmt(self.px(v))
            out.append(
                f'<line x1="{x}" x2="{x}" y1="{self.top}" y2="{H - BOTTOM}" stroke="#eef0f3"/>'
                f'<text x="{x}" y="{H - BOTTOM + 15}" font-size="11" text-anchor="middle" '
                f'fill="#5b6673">{_tick_text(v)}</text>'
            )
        for v in _ticks(self.y0, self.y1):
            y = _fmt(self.py(v))
            out.append(
                f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y}" y2="{y}" stroke="#eef0f3"/>'
                f'<text x="{LEFT - 6}" y="{_fmt(self.py(v) + 4)}" font-size="11" '
                f'text-anchor="end" fill="#5b6673">{_tick_text(v)}</text>'
            )
        out.append(
            f'<text x="{(LEFT + W - RIGHT) / 2:.1f}" y="{H - 8}" font-size="12" '
            f'text-anchor="middle" fill="#1d232b">{esc(x_title)}</text>'
            f'<text transform="translate(14 {(self.top + H - BOTTOM) / 2:.1f}) rotate(-90)" '
            f'font-size="12" text-anchor="middle" fill="#1d232b">{esc(y_title)}</text>'
        )
        return out


def _padded(values: Sequence[float], errs: Sequence[float]) -> tuple[float, float]:
    lo = min(v - e for v, e in zip(values, errs, strict=True))
    hi = max(v + e for v, e in zip(values, errs, strict=True))
    pad = max((hi - lo) * 0.08, 0.5)
    return lo - pad, hi + pad


def _svg(body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
        f'height="{H}" role="img" aria-label="{esc(label)}">' + "".join(body) + "</svg>"
    )


Box = tuple[float, float, float, float]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


Spot = tuple[float, float, str, Box, bool]  # x, y, anchor, box, needs a leader line


def _gap(box: Box, x: float, y: float) -> float:
    return math.hypot(x - min(max(x, box[0]), box[2]), y - min(max(y, box[1]), box[3]))


def _place(
    x: float, y: float, text: str, taken: list[Box], others: Sequence[tuple[float, float]]
) -> Spot | None:
    """(x, y, anchor, box) of a label near (x, y) that overlaps nothing in ``taken``, every
    side at the nearest distance first, then farther out; first only where the label is
    nearer its own point than any other (so it cannot be read as another's)."""
    w, h = len(text) * CHAR_W, 12.0
    for strict in (True, False):
        for scale in (1, 2, 3, 4, 5):
            for dx, dy in ((8, 4), (-8, 4), (0, -9), (0, 17), (8, -8), (-8, -8), (8, 16), (-8, 16)):
                ax = x + dx * scale
                ay = y + (dy if scale == 1 else dy + math.copysign(12, dy) * (scale - 1))
                anchor = "start" if dx > 0 else "end" if dx < 0 else "middle"
                left = ax if anchor == "start" else ax - w if anchor == "end" else ax - w / 2
                box = (left, ay - h + 2, left + w, ay + 2)
                inside = (
                    box[0] >= LEFT
                    and box[2] <= W - RIGHT
                    and box[1] >= TOP
                    and box[3] <= H - BOTTOM
                )
                if not inside or any(_overlaps(box, t) for t in taken):
                    continue
                if strict and any(_gap(box, ox, oy) <= _gap(box, x, y) for ox, oy in others):
                    continue
                taken.append(box)
                return ax, ay, anchor, box, not strict or scale > 2
    return None


def _leader(x: float, y: float, box: Box) -> str:
    """A thin line from a point to a label placed away from it (so that it is clear whose)."""
    lx = min(max(x, box[0]), box[2])
    ly = min(max(y, box[1]), box[3])
    return (
        f'<line x1="{_fmt(x)}" y1="{_fmt(y)}" x2="{_fmt(lx)}" y2="{_fmt(ly)}" '
        'stroke="#5b6673" stroke-width="1"/>'
    )


def scatter(points: Sequence[Point], x_title: str, y_title: str, label: str) -> str:
    """Points with ±std error bars (zero bars are not drawn); coordinates in percent."""
    if not points:
        return ""
    f = _Frame(
        _padded([p.x for p in points], [p.x_err for p in points]),
        _padded([p.y for p in points], [p.y_err for p in points]),
    )
    body = f.axes(x_title, y_title)
    taken: list[Box] = []
    for p in points:  # points and error bars are obstacles for the labels
        cx, cy = f.px(p.x), f.py(p.y)
        taken.append((cx - 4, cy - 4, cx + 4, cy + 4))
        if p.x_err > 0:
            taken.append((f.px(p.x - p.x_err), cy - 1, f.px(p.x + p.x_err), cy + 1))
        if p.y_err > 0:
            taken.append((cx - 1, f.py(p.y + p.y_err), cx + 1, f.py(p.y - p.y_err)))
    for p in points:
        cx, cy = f.px(p.x), f.py(p.y)
        if p.x_err > 0:
            body.append(
                f'<line x1="{_fmt(f.px(p.x - p.x_err))}" x2="{_fmt(f.px(p.x + p.x_err))}" '
                f'y1="{_fmt(cy)}" y2="{_fmt(cy)}" stroke="#8aa6c8"/>'
            )
        if p.y_err > 0:
            body.append(
                f'<line x1="{_fmt(cx)}" x2="{_fmt(cx)}" y1="{_fmt(f.py(p.y - p.y_err))}" '
                f'y2="{_fmt(f.py(p.y + p.y_err))}" stroke="#8aa6c8"/>'
            )
        body.append(
            f'<circle cx="{_fmt(cx)}" cy="{_fmt(cy)}" r="3.5" fill="#1f5fa8">'
            f"<title>{esc(p.label)}: {p.x:.2f}, {p.y:.2f}</title></circle>"
        )
    for p in points:  # labels after every point, so that no label hides one
        cx, cy = f.px(p.x), f.py(p.y)
        others = [(f.px(q.x), f.py(q.y)) for q in points if q is not p]
        text = p.label
        spot = _place(cx, cy, text, taken, others)
        if spot is None:
            text = p.mark
            spot = _place(cx, cy, text, taken, others)
        if spot is None:
            continue
        if spot[4]:
            body.append(_leader(cx, cy, spot[3]))
        body.append(
            f'<text x="{_fmt(spot[0])}" y="{_fmt(spot[1])}" font-size="11" '
            f'text-anchor="{spot[2]}" fill="#1d232b">{esc(text)}</text>'
        )
    return _svg(body, label)


def _legend_spots(names: Sequence[str]) -> list[tuple[float, int]]:
    """(x, row) of each legend entry, laid out left to right above the plot, wrapping."""
    out, x, row = [], float(LEFT), 0
    for name in names:
        w = 26 + len(name) * CHAR_W + 14
        if x + w > W - RIGHT and x > LEFT:
            x, row = float(LEFT), row + 1
        out.append((x, row))
        x += w
    return out


def line_chart(series: Sequence[Series], x_title: str, y_title: str, label: str) -> str:
    """One line per series with a legend; points marked (short runs have few epochs)."""
    series = [s for s in series if s.xs]
    if not series:
        return ""
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    x_lo, x_hi = min(xs), max(xs)
    if x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.06 if y_hi > y_lo else max(abs(y_hi) * 0.05, 0.5)
    spots = _legend_spots([s.name for s in series])
    top = TOP + 16 * (max(y for _, y in spots) + 1)
    f = _Frame((x_lo, x_hi), (y_lo - pad, y_hi + pad), top)
    f.x_int = True
    body = f.axes(x_title, y_title)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if i % 2 else ""
        pts = " ".join(f"{_fmt(f.px(x))},{_fmt(f.py(y))}" for x, y in zip(s.xs, s.ys, strict=True))
        body.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>'
        )
        body += [
            f'<circle cx="{_fmt(f.px(x))}" cy="{_fmt(f.py(y))}" r="2.5" fill="{color}">'
            f"<title>{esc(s.name)} epoch {x:g}: {y:.4g}</title></circle>"
            for x, y in zip(s.xs, s.ys, strict=True)
        ]
        lx, row = spots[i]
        ly = TOP + 16 * row + 4
        body.append(
            f'<line x1="{_fmt(lx)}" x2="{_fmt(lx + 18)}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"{dash}/><text x="{_fmt(lx + 22)}" y="{ly}" '
            f'font-size="11" fill="#1d232b">{esc(s.name)}</text>'
        )
    return _svg(body, label)
