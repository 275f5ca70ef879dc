"""Pictures, each beside the CSV of exactly what it draws (matplotlib, Agg: no display).

- :func:`plot_curves` (``ardbench plot RUN...``): training curves of one or more runs, one
  panel per loss term and per probe accuracy (clean and PGD-10 on the probe points, each
  epoch). Runs that share a recipe (same method, recipe hash, dataset, teacher and student:
  they differ only by seed) are drawn as their mean with a ± one-std band (ddof = 1).
- :func:`plot_table` (``ardbench plot --table PAIR``, and every table ``ardbench leaderboard``
  writes): clean against AutoAttack accuracy of a leaderboard table's rows, mean with ± one
  std error bars over seeds (PGD-20 where the table has no AA), the papers' figures beside.

PNG files carry no matplotlib version or date (``metadata``), and are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from .io import atomic_write_bytes, write_text_atomic
from .plot_labels import place_labels, unique_labels

if TYPE_CHECKING:  # pragma: no cover
    from .results.records import RecordLike
    from .results.tables import Table
    from .rundir import Run

__all__ = [
    "curves_table",
    "draw_table_plots",
    "plot_curves",
    "plot_table",
    "scatter_paths",
    "table_points",
]

PNG_METADATA = {"Software": None}  # no version string: same data, same file on one machine


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, png: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata=PNG_METADATA, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(png, buf.getvalue())


# ----------------------------------------------------------------------------- curves


def _group_of(run: Run) -> tuple[str, str]:
    """(group id, label): runs that differ only by seed (one row hash, as a table row) share
    a group."""
    from .results.tables import _recipe_label

    cfg = run.config
    ident = "|".join([cfg.method, cfg.row_hash(), cfg.dataset, str(cfg.teacher or ""), cfg.student])
    label = f"{cfg.method} ({_recipe_label(cfg.recipe)}, {cfg.student})"
    return ident, label


def curves_table(runs: Sequence[Run]) -> pd.DataFrame:
    """What :func:`plot_curves` draws, one row per (group, metric, epoch): ``group`` (its
    label), ``metric`` (``loss.<term>``, ``probe.clean``, ``probe.pgd10``), ``epoch``, ``mean``,
    ``std`` (ddof = 1; NaN for one run), ``n`` (runs with that epoch) and ``runs`` (their
    ids)."""
    groups: dict[str, tuple[str, list[Run]]] = {}
    for run in runs:
        ident, label = _group_of(run)
        groups.setdefault(ident, (label, []))[1].append(run)
    # two groups with one label (e.g. other overrides) are told apart by an index
    labels = [label for label, _ in groups.values()]
    rows = []
    for i, (label, members) in enumerate(groups.values()):
        if labels.count(label) > 1:
            label = f"{label} #{i + 1}"
        frames = [r.curves() for r in members]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if frame.empty:
            continue
        metrics = [c for c in frame.columns if c.startswith(("loss.", "probe."))]
        for metric in metrics:
            for epoch, values in frame.groupby("epoch")[metric]:
                vals = values.dropna()
                if vals.empty:
                    continue
                rows.append(
                    {
                        "group": label,
                        "metric": metric,
                        "epoch": int(epoch),
                        "mean": float(vals.mean()),
                        "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                        "n": int(len(vals)),
                        "runs": " ".join(sorted(r.run_id for r in members)),
                    }
                )
    return pd.DataFrame(rows, columns=["group", "metric", "epoch", "mean", "std", "n", "runs"])


def _metric_order(metrics: Iterable[str]) -> list[str]:
    losses = sorted(m for m in metrics if m.startswith("loss.") and m != "loss.loss")
    total = ["loss.loss"] if "loss.loss" in metrics else []
    probes = [m for m in ("probe.clean", "probe.pgd10") if m in metrics]
    return losses + total + probes


_TITLES = {"probe.clean": "probe: clean accuracy", "probe.pgd10": "probe: PGD-10 accuracy"}


def plot_curves(
    runs: Sequence[Run], out_dir: str | Path, name: str = "curves"
) -> tuple[Path, Path]:
    """Draw the runs' curves into ``out_dir/<name>.png`` beside ``out_dir/<name>.csv``."""
    out_dir = Path(out_dir)
    table = curves_table(runs)
    csv = out_dir / f"{name}.csv"
    png = out_dir / f"{name}.png"
    write_text_atomic(csv, table.to_csv(index=False, float_format="%.6g"))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics = _metric_order(set(table["metric"]))
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    groups = list(dict.fromkeys(table["group"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for gi, group in enumerate(groups):
            g = table[(table["group"] == group) & (table["metric"] == metric)]
            if g.empty:
                continue
            color = colors[gi % len(colors)]
            scale = 100.0 if metric.startswith("probe.") else 1.0
            n = int(g["n"].max())
            ax.plot(
                g["epoch"],
                scale * g["mean"],
                color=color,
                marker="o" if len(g) < 30 else None,
                ms=3,
                label=f"{group}" + (f", mean of {n} seeds" if n > 1 else ""),
            )
            std = g["std"].fillna(0.0)
            if n > 1 and len(g) == 1:  # one epoch: a band has no width
                ax.errorbar(g["epoch"], scale * g["mean"], yerr=scale * std, color=color, capsize=3)
            elif n > 1:
                ax.fill_between(
                    g["epoch"],
                    scale * (g["mean"] - std),
                    scale * (g["mean"] + std),
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
        ax.set_title(_TITLES.get(metric, metric.replace("loss.", "loss: ")), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)" if metric.startswith("probe.") else "loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if metrics:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        for ax in list(axes.flat)[1 : len(metrics)]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    several = bool(len(table)) and int(table["n"].max()) > 1
    title = "training curves" + (" (shaded: ± 1 std over seeds)" if several else "")
    if len(runs) == 1:  # one run: say which, not seeds
        title = f"training curves of run {runs[0].run_id}"
    fig.suptitle(title, fontsize=11)
    _save(fig, png)
    return png, csv


# ------------------------------------------------------------------------------ tables


def scatter_paths(table_relpath: str) -> tuple[str, str]:
    """(png, csv) of a table's scatter, relative to the leaderboard directory: beside the
    table's markdown, same name (``<track>/<teacher>__<student>.png`` / ``.csv``)."""
    stem = str(PurePosixPath(table_relpath).with_suffix(""))
    return f"{stem}.png", f"{stem}.csv"


def table_points(table: Table) -> pd.DataFrame:
    """One row per table row: rank, method, recipe, seeds, clean and y (AA, else PGD-20)
    mean and std in percent (std NaN with one run), and the paper's clean / AA figures."""
    y_col = "aa" if table.sort_by == "aa" else "pgd20"
    rows = []
    for r in table.rows:  # rank: the shared rank of the table's # column
        clean, y = r.stats["clean"], r.stats[y_col]

        def pct(v: float | None) -> float:
            return math.nan if v is None else 100.0 * v

        rows.append(
            {
                "rank": "✗" if r.failed else (str(r.rank) if r.rank is not None else "–"),
                "method": r.method,
                "recipe": r.recipe_cell,
                "seeds": r.runs,
                "clean_mean": pct(clean.mean),
                "clean_std": pct(clean.std),
                f"{y_col}_mean": pct(y.mean),
                f"{y_col}_std": pct(y.std),
                "paper_clean": r.paper.get("clean", math.nan),
                f"paper_{y_col}": r.paper.get(y_col, math.nan),
            }
        )
    return pd.DataFrame(rows)


def plot_table(table: Table, png: str | Path, csv: str | Path) -> tuple[Path, Path]:
    """Clean vs AA (else PGD-20) of ``table``'s rows, ± one std over seeds."""
    from .results.tables import COLUMN_TITLES

    png, csv = Path(png), Path(csv)
    points = table_points(table)
    y_col = "aa" if table.sort_by == "aa" else "pgd20"
    write_text_atomic(csv, points.to_csv(index=False, float_format="%.4f"))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    one_recipe = points["recipe"].nunique() <= 1
    # runs with the y column per row (AA is often attached to seed 0 only); not in the CSV,
    # whose columns the committed leaderboard's files fix
    points["y_n"] = [r.stats[y_col].n for r in table.rows]
    shown = points[~(points["clean_mean"].isna() | points[f"{y_col}_mean"].isna())]
    labels = unique_labels(
        [_point_label(p, y_col, one_recipe) for _, p in shown.iterrows()],
        [str(p["recipe"]) for _, p in shown.iterrows()],
    )
    paper = 0
    for _, p in shown.iterrows():
        ax.errorbar(
            p["clean_mean"],
            p[f"{y_col}_mean"],
            xerr=None if math.isnan(p["clean_std"]) else p["clean_std"],
            yerr=None if math.isnan(p[f"{y_col}_std"]) else p[f"{y_col}_std"],
            fmt="o",
            capsize=3,
        )
        if not (math.isnan(p["paper_clean"]) or math.isnan(p[f"paper_{y_col}"])):
            ax.plot(p["paper_clean"], p[f"paper_{y_col}"], "x", color="grey")
            paper += 1
    ax.autoscale_view()
    place_labels(ax, list(shown["clean_mean"]), list(shown[f"{y_col}_mean"]), labels)
    title = COLUMN_TITLES[y_col] + (" (no AA in this table)" if y_col != "aa" else "")
    if one_recipe and len(points):
        title += f"; recipe {points['recipe'].iloc[0]}"
    # say only what the plot shows: bars exist where a row has several runs, x where a paper
    # figure is known
    legend = (["bars ± 1 std over seeds"] if (shown["seeds"] > 1).any() else []) + (
        ["x: paper"] if paper else []
    )
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{COLUMN_TITLES[y_col]} accuracy (%)")
    ax.set_title(f"{table.name}\nclean vs {'; '.join([title, *legend])}", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, png)
    return png, csv


def _point_label(p: Any, y_col: str, one_recipe: bool) -> str:
    """``rank. method (recipe), n=…``; where the y value comes from fewer runs than the
    clean one (AA attached to one seed of three), both counts."""
    recipe = "" if one_recipe else f" ({p['recipe']})"
    n_y, n = int(p["y_n"]), int(p["seeds"])
    count = f"n={n}" if n_y == n else f"n={n}, {y_col.upper()} n={n_y}"
    return f"{p['rank']}. {p['method']}{recipe}, {count}"


def draw_table_plots(
    records: Sequence[RecordLike], out_dir: str | Path, removed: Iterable[str] = ()
) -> list[str]:
    """Every table's scatter (PNG beside its CSV) in ``out_dir``; a PNG is redrawn only when
    its CSV changed or it is missing (the tables' data decide, not the drawing library). The
    plots of ``removed`` tables (relative .md paths) are deleted. Returns the PNGs written."""
    from .results.tables import build_tables

    out_dir = Path(out_dir)
    written = []
    for table in build_tables(records):
        png_rel, csv_rel = scatter_paths(table.relpath)
        png, csv = out_dir / png_rel, out_dir / csv_rel
        new_csv = table_points(table).to_csv(index=False, float_format="%.4f")
        if png.is_file() and csv.is_file() and csv.read_text(encoding="utf-8") == new_csv:
            continue
        plot_table(table, png, csv)
        written.append(png_rel)
    for rel in removed:
        for path in scatter_paths(rel):
            (out_dir / path).unlink(missing_ok=True)
    return written
