"""Point labels that do not overlap, and that tell points apart (issue 27).

:func:`place_labels` puts each label at one of a few offsets around its point, the one whose
box overlaps least with the labels placed so far and with the points' markers (greedy, in
the order given: the top-ranked rows first), measured in display coordinates with the
figure's renderer. If every offset overlaps, it takes the least bad one and a thin leader
line joins label and point. :func:`unique_labels` makes equal labels distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["place_labels", "unique_labels"]

# offsets in points (dx, dy, horizontal alignment): right-up first, as the plots had it
_OFFSETS = [
    (5, 4, "left"),
    (5, -11, "left"),
    (-5, 4, "right"),
    (-5, -11, "right"),
    (0, 10, "center"),
    (0, -17, "center"),
    (12, 16, "left"),
    (-12, 16, "right"),
    (12, -23, "left"),
    (-12, -23, "right"),
    (24, 0, "left"),
    (-24, 0, "right"),
]
_MARKER_HALF = 4.0  # half the side of a marker's box, in display pixels (about 6 pt markers)


def unique_labels(labels: Sequence[str], details: Sequence[str]) -> list[str]:
    """``labels``, with ``(detail)`` added where two are equal, then ``#k`` if still equal."""
    out = list(labels)
    for i, label in enumerate(labels):
        if labels.count(label) > 1 and details[i]:
            out[i] = f"{label} ({details[i]})"
    seen = list(out)
    for i, label in enumerate(seen):
        if seen.count(label) > 1:
            out[i] = f"{label} #{seen[: i + 1].count(label)}"
    return out


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(
    ax: Any, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: int = 7
) -> list[Any]:
    """Annotate point i with ``texts[i]`` where it overlaps least (see the module doc)."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    markers = [
        Bbox.from_extents(
            px - _MARKER_HALF, py - _MARKER_HALF, px + _MARKER_HALF, py + _MARKER_HALF
        )
        for px, py in points
    ]
    axes_box = ax.get_window_extent(renderer)
    placed: list[Any] = []
    out = []
    for i, text in enumerate(texts):
        best: tuple[float, Any] | None = None
        for dx, dy, ha in _OFFSETS:
            ann = _annotate(ax, text, (xs[i], ys[i]), (dx, dy), ha, fontsize)
            box = ann.get_window_extent(renderer)
            cost = sum(_overlap(box, b) for b in placed)
            cost += sum(_overlap(box, m) for j, m in enumerate(markers) if j != i)
            outside = box.width * box.height - _overlap(box, axes_box)
            cost += 2 * outside  # a label leaving the axes is as bad as a covered one
            ann.remove()
            if best is None or cost < best[0]:
                best = (cost, (dx, dy, ha, box))
            if cost == 0:
                break
        assert best is not None
        cost, (dx, dy, ha, box) = best
        arrow = {"arrowstyle": "-", "lw": 0.4, "color": "grey"} if cost > 0 else None
        ann = _annotate(ax, text, (xs[i], ys[i]), (dx, dy), ha, fontsize, arrow)
        placed.append(box)
        out.append(ann)
    return out


def _annotate(
    ax: Any,
    text: str,
    xy: tuple[float, float],
    offset: tuple[float, float],
    ha: str,
    fontsize: float,
    arrow: dict[str, Any] | None = None,
) -> Any:
    """A label ``offset`` points from its point (tried at each candidate place, then placed)."""
    return ax.annotate(
        text, xy, textcoords="offset points", xytext=offset, ha=ha, fontsize=fontsize,
        arrowprops=arrow,
    )  # fmt: skip
