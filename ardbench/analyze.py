"""``ardbench analyze variance-gap``: the student–teacher gap in the variance of penultimate
features, against robust accuracy (the measurement the variance-gap paper builds on: Dong et
al., "Adversarially Robust Distillation by Reducing the Student-Teacher Variance Gap", ECCV
2024; ``reference/methods.md`` §2.9, "Analysis command").

For each finished run, on the first n test points its record was evaluated on (the eval-mode
networks; n as the record's unless ``n_examples`` says otherwise):

- x′ = the evaluator's PGD-20 points against the *student* at the run's evaluation radius
  (CE, uniform start, step eps/4, per-point random starts from the run's seed: the record's
  ``pgd20`` column exactly), fed to the student and to the teacher;
- F = penultimate features (:func:`ardbench.models.logits_and_features`), one row per point;
- **Var(F)** = (1/d) Σ_k (1/(n−1)) Σ_j (F_jk − F̄_k)²: the mean over the d feature dimensions
  of each dimension's variance across points (ddof = 1), overall and per class (points of the
  true class c);
- **gap** = Var(F_student) − Var(F_teacher), on clean inputs (``gap_clean``) and on x′
  (``gap_adv``); the paper's own ΔVar = Var(F(x′)) − Var(F(x)) of each network too
  (``dvar_student``, ``dvar_teacher``);
- **robust accuracy** = the student's accuracy on x′ counted point-wise (correct clean and
  adversarial), which reproduces the record's PGD-20 (``pgd20_record``).

A **teacher-free baseline** (e.g. a PGD-AT run of the same track and student) has no teacher
of its own: it is measured against the teacher of the distillation runs of its table (same
track and student), so it lands on the same axes. Baselines are the teacher-free runs among
those given, plus, unless disabled, those found beside them (the given runs' directories).

Outputs, in ``out_dir``: ``variance_gap.csv`` (one row per run), ``variance_gap_per_class.csv``,
``variance_gap_fit.csv`` (per series and x: slope, intercept, Pearson r, n) and
``variance_gap.png`` (robust accuracy against ``gap_adv`` and against the student's ``dvar``,
each series with its least-squares line and r).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ArdbenchError
from .io import write_text_atomic
from .rundir import Run

if TYPE_CHECKING:  # pragma: no cover
    from .results.schema import Record

__all__ = [
    "FIT_X",
    "VarianceGapError",
    "feature_variance",
    "fit_line",
    "measure_run",
    "per_class_variance",
    "variance_gap",
]

FIT_X = {
    "gap_adv": "Var(F_student) − Var(F_teacher) on PGD-20 inputs",
    "dvar_student": "student's Var(F(x′)) − Var(F(x)) (the paper's ΔVar)",
}


class VarianceGapError(ArdbenchError):
    """A run the analysis cannot measure (unfinished, no teacher to compare with, ...)."""


# ----------------------------------------------------------------------------- statistics


def feature_variance(feats: Any) -> float:
    """Mean over dimensions of the per-dimension variance across points (ddof = 1); NaN for
    fewer than two points. ``feats``: (n, d), a tensor or an array."""
    f = np.asarray(feats.detach().cpu().double() if hasattr(feats, "detach") else feats, float)
    if f.ndim != 2:
        raise ValueError(f"features must be (points, dimensions), got shape {f.shape}")
    if len(f) < 2:
        return math.nan
    return float(f.var(axis=0, ddof=1).mean())


def per_class_variance(feats: Any, labels: Any, num_classes: int) -> list[float]:
    """:func:`feature_variance` of the points of each class (NaN with fewer than two)."""
    f = np.asarray(feats.detach().cpu().double() if hasattr(feats, "detach") else feats, float)
    y = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels)
    return [feature_variance(f[y == c]) for c in range(num_classes)]


def fit_line(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = slope·x + intercept and Pearson r (NaN where undefined: fewer
    than two points, or no spread)."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[ok], ys[ok]
    out = {"n": int(len(xs)), "slope": math.nan, "intercept": math.nan, "pearson_r": math.nan}
    if len(xs) < 2 or np.ptp(xs) == 0:
        return out
    slope, intercept = np.polyfit(xs, ys, 1)
    out.update(slope=float(slope), intercept=float(intercept))
    if np.ptp(ys) > 0:
        out["pearson_r"] = float(np.corrcoef(xs, ys)[0, 1])
    return out


# ------------------------------------------------------------------------------- one run


@dataclass
class _Teacher:
    module: Any
    spec: str
    sha256: str


def _load_teacher(run: Run, record: Record, device: Any) -> _Teacher:
    from .models import load_model

    block = record.teacher
    spec = (block.resolved or block.spec) if block is not None else None
    if block is None or not spec:
        raise VarianceGapError(f"run {run.run_id} has no teacher")
    cfg = run.config
    loaded = load_model(
        spec,
        num_classes=record.track.num_classes,
        dataset=cfg.dataset,
        runs_dir=run.directory.parent,
        device=device,
    )
    if loaded.sha256 != block.sha256:
        raise VarianceGapError(
            f"run {run.run_id}: the teacher {spec!r} loads with other weights than the run "
            f"used (sha256 {loaded.sha256[:12]} ≠ {block.sha256[:12]})",
            hint="a fresh ARCH teacher cannot be rebuilt; give it as ARCH:PATH or run:RUN_ID",
        )
    return _Teacher(loaded.module.eval(), spec, loaded.sha256)


@dataclass
class _Features:
    """Penultimate features of student and teacher on clean and PGD-20 inputs (float64, CPU),
    and which points the student got right on each."""

    feats: dict[str, Any]  # s_clean, s_adv, t_clean, t_adv -> [n, d]
    clean_ok: Any
    adv_ok: Any


def _features(
    student: Any, teacher: Any, x: Any, y: Any, attack: tuple[float, str, int], batch_size: int
) -> _Features:
    """Attack the student (PGD-20 at ``attack`` = (eps, norm, seed)) batch by batch and
    collect both networks' features on the clean and the adversarial inputs."""
    import torch

    from .eval.columns import adversarial_examples
    from .models import logits_and_features

    eps, norm, seed = attack
    feats: dict[str, list[Any]] = {"s_clean": [], "s_adv": [], "t_clean": [], "t_adv": []}
    correct: dict[str, list[Any]] = {"s_clean": [], "s_adv": []}
    for b0 in range(0, len(x), batch_size):
        xb, yb = x[b0 : b0 + batch_size], y[b0 : b0 + batch_size]
        x_adv = adversarial_examples(
            student, xb, yb, "pgd20", eps=eps, norm=norm, seed=seed, start=b0
        )
        with torch.no_grad():
            for key, net, inputs in (
                ("s_clean", student, xb),
                ("s_adv", student, x_adv),
                ("t_clean", teacher, xb),
                ("t_adv", teacher, x_adv),
            ):
                logits, f = logits_and_features(net, inputs)
                feats[key].append(f.flatten(1).double().cpu())
                if key in correct:
                    correct[key].append((logits.argmax(1) == yb).cpu())
    return _Features(
        {k: torch.cat(v) for k, v in feats.items()},
        torch.cat(correct["s_clean"]),
        torch.cat(correct["s_adv"]),
    )


def _gaps(var: dict[str, Any]) -> dict[str, Any]:
    """The variance gaps (student minus teacher) and each network's ΔVar."""
    return {
        "gap_clean": var["s_clean"] - var["t_clean"],
        "gap_adv": var["s_adv"] - var["t_adv"],
        "dvar_student": var["s_adv"] - var["s_clean"],
        "dvar_teacher": var["t_adv"] - var["t_clean"],
    }


def _class_rows(run_id: str, f: _Features, y: Any, num_classes: int) -> list[dict[str, Any]]:
    """The rows of the per-class file: each class's feature variances and gaps."""
    import torch

    per = {k: per_class_variance(v, y, num_classes) for k, v in f.feats.items()}
    counts = torch.bincount(y.cpu(), minlength=num_classes).tolist()
    return [
        {
            "run_id": run_id,
            "class": c,
            "n": counts[c],
            "var_student_clean": per["s_clean"][c],
            "var_student_adv": per["s_adv"][c],
            "var_teacher_clean": per["t_clean"][c],
            "var_teacher_adv": per["t_adv"][c],
            "gap_clean": per["s_clean"][c] - per["t_clean"][c],
            "gap_adv": per["s_adv"][c] - per["t_adv"][c],
        }
        for c in range(num_classes)
    ]


def measure_run(
    run: Run,
    *,
    teacher: _Teacher | None = None,
    n_examples: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The row of ``variance_gap.csv`` and the rows of the per-class file for one run;
    ``teacher`` overrides the run's own (for teacher-free baselines)."""
    from .data import load_dataset
    from .device import resolve_device

    record = run.record
    if record is None:
        raise VarianceGapError(f"run {run.run_id} has not finished (no record.json)")
    dev = resolve_device(device)
    cfg = run.config
    t = teacher or _load_teacher(run, record, dev)
    student = run.model(device=str(dev))
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    x, y = ds.test_subset(n_examples or record.eval.n_examples, device=dev)
    eps = float(record.track.eps)
    f = _features(student, t.module, x, y, (eps, record.track.norm, cfg.train.seed), batch_size)
    var = {k: feature_variance(v) for k, v in f.feats.items()}
    row = {
        "run_id": run.run_id,
        "method": record.method.name,
        "seed": record.seed,
        "teacher_free": record.teacher is None,
        "teacher": t.spec,
        "n": len(x),
        "eps": eps,
        "clean_acc": float(f.clean_ok.double().mean()),
        "robust_acc": float((f.clean_ok & f.adv_ok).double().mean()),
        "pgd20_record": record.eval.accuracy.get("pgd20")
        if record.eval.n_examples == len(x)
        else None,
        "var_student_clean": var["s_clean"],
        "var_student_adv": var["s_adv"],
        "var_teacher_clean": var["t_clean"],
        "var_teacher_adv": var["t_adv"],
        **_gaps(var),
    }
    return row, _class_rows(run.run_id, f, y, ds.num_classes)


# -------------------------------------------------------------------------------- several


def _pair_key(record: Record) -> tuple[Any, ...]:
    from .results.grouping import table_key

    return table_key(record)._replace(teacher_sha="")


def find_baselines(runs: Sequence[Run], search: Sequence[Path]) -> list[Run]:
    """Teacher-free finished runs in ``search`` (direct children) sharing a track and student
    with one of the distillation ``runs``."""
    pairs = {_pair_key(rec) for r in runs if (rec := r.record) and rec.teacher}
    found = []
    for folder in search:
        for cfg in sorted(Path(folder).glob("*/config.json")):
            run = Run(cfg.parent)
            rec = run.record
            if rec and rec.teacher is None and _pair_key(rec) in pairs:
                found.append(run)
    return found


def variance_gap(
    runs: Sequence[Run],
    out_dir: str | Path,
    *,
    baselines: Sequence[Run] = (),
    n_examples: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    progress: Any = None,
) -> dict[str, Path]:
    """Measure every run (distillation runs against their teacher, teacher-free ones against
    the teacher of their table's distillation runs), write the CSVs and the scatter plot."""
    from .device import resolve_device

    dev = resolve_device(device)
    runs = list(dict.fromkeys([*runs, *baselines]))
    records = {r: r.record for r in runs}
    unfinished = [r.run_id for r, rec in records.items() if rec is None]
    if unfinished:
        raise VarianceGapError(f"unfinished runs (no record.json): {', '.join(unfinished)}")
    distill = [
        (r, rec) for r, rec in records.items() if rec is not None and rec.teacher is not None
    ]
    free = [(r, rec) for r, rec in records.items() if rec is not None and rec.teacher is None]
    if not distill:
        raise VarianceGapError(
            "no distillation run among these: the gap needs a student and its teacher",
            hint="give runs trained with a teacher (teacher-free runs are baselines beside them)",
        )
    rows, classes = [], []
    teachers: dict[tuple, _Teacher] = {}
    for run, rec in distill:
        t = _load_teacher(run, rec, dev)
        teachers.setdefault(_pair_key(rec), t)
        if progress:
            progress(run)
        row, per = measure_run(
            run, teacher=t, n_examples=n_examples, device=str(dev), batch_size=batch_size
        )
        rows.append(row)
        classes += per
    for run, rec in free:
        found = teachers.get(_pair_key(rec))
        if found is None:
            continue  # no distillation run of its track and student to take a teacher from
        t = found
        if progress:
            progress(run)
        row, per = measure_run(
            run, teacher=t, n_examples=n_examples, device=str(dev), batch_size=batch_size
        )
        rows.append(row)
        classes += per
    table = pd.DataFrame(rows)
    fits = []
    for series, part in (
        ("distillation", table[~table["teacher_free"]]),
        ("teacher-free", table[table["teacher_free"]]),
    ):
        for x in FIT_X:
            fit = fit_line(part[x], 100 * part["robust_acc"]) if len(part) else fit_line([], [])
            fits.append({"series": series, "x": x, "y": "robust_acc (%)", **fit})
    out = Path(out_dir)
    paths = {
        "table": out / "variance_gap.csv",
        "per_class": out / "variance_gap_per_class.csv",
        "fit": out / "variance_gap_fit.csv",
        "plot": out / "variance_gap.png",
    }
    write_text_atomic(paths["table"], table.to_csv(index=False, float_format="%.8g"))
    write_text_atomic(
        paths["per_class"], pd.DataFrame(classes).to_csv(index=False, float_format="%.8g")
    )
    fit_frame = pd.DataFrame(fits)
    write_text_atomic(paths["fit"], fit_frame.to_csv(index=False, float_format="%.8g"))
    _plot(table, fit_frame, paths["plot"])
    return paths


def _plot(table: pd.DataFrame, fits: pd.DataFrame, png: Path) -> None:
    from .plots import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(FIT_X), figsize=(6.0 * len(FIT_X), 4.6), layout="constrained")
    styles = {"distillation": ("o", "C0"), "teacher-free": ("s", "C3")}
    for ax, (x, xlabel) in zip(axes, FIT_X.items(), strict=True):
        for series, (marker, color) in styles.items():
            part = table[table["teacher_free"] == (series == "teacher-free")]
            if part.empty:
                continue
            ax.scatter(part[x], 100 * part["robust_acc"], marker=marker, color=color)
            fit = fits[(fits["series"] == series) & (fits["x"] == x)].iloc[0]
            label = f"{series} (n={fit['n']})"
            if not math.isnan(fit["slope"]):
                xs = np.linspace(part[x].min(), part[x].max(), 2)
                r = fit["pearson_r"]
                label += f": r = {r:+.3f}" if not math.isnan(r) else ""
                label += " (2 points)" if fit["n"] == 2 else ""
                ax.plot(xs, fit["slope"] * xs + fit["intercept"], "--", color=color, label=label)
            else:
                ax.plot([], [], marker, color=color, label=label)
        _label_points(ax, table, x)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("robust accuracy, PGD-20 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "robust accuracy vs the variance of penultimate features (Var: mean per-dim "
        "variance, ddof 1)",
        fontsize=10,
    )
    _save(fig, png)


def _label_points(ax: Any, table: pd.DataFrame, x: str) -> None:
    """``method s<seed>`` beside each point, placed apart; two runs of one method and seed
    (other recipes) are told apart by their run ids."""
    from .plot_labels import place_labels, unique_labels

    ax.autoscale_view()
    labels = unique_labels(
        [f"{p['method']} s{p['seed']}" for _, p in table.iterrows()],
        [str(p.get("run_id", "")) for _, p in table.iterrows()],
    )
    place_labels(ax, list(table[x]), list(100 * table["robust_acc"]), labels)
