"""The plot fixes of issue 27: labels placed apart and told apart, titles that say only what
the plot shows (one run, no seeds, no paper points), AA counted from its own runs."""

from __future__ import annotations

import itertools

import pytest
from plotkit import fake_run, plot_record

from ardbench import plots
from ardbench.plot_labels import place_labels, unique_labels
from ardbench.results.tables import build_tables


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save (kept open for inspection)."""
    kept = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, png: (kept.append(fig), real(fig, png)))
    return kept


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_unique_labels():
    assert unique_labels(["a", "a", "b"], ["x", "y", "z"]) == ["a (x)", "a (y)", "b"]
    assert unique_labels(["a", "a"], ["x", "x"]) == ["a (x) #1", "a (x) #2"]


def test_placed_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    xs = [50.0, 50.3, 50.6, 50.2, 70.0]  # four points close together, one apart
    ys = [40.0, 40.2, 39.9, 40.4, 20.0]
    ax.plot(xs, ys, "o")
    ax.set_xlim(30, 90)
    ax.set_ylim(10, 60)
    anns = place_labels(ax, xs, ys, [f"{i}. method-{i} (standard), n=3" for i in range(5)])
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in anns]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    plt.close(fig)


def _records(aa_seeds, paper=None):
    out = []
    for seed in range(3):
        aa = 0.5 + seed / 100 if seed in aa_seeds else None
        out.append(plot_record("rslad", seed, 0.80 + seed / 100, aa, paper=paper or {}))
    out.append(plot_record("ard", 0, 0.85, 0.48, paper=paper or {}))
    return out


def test_aa_from_one_run_of_three_does_not_make_the_y_axis(tmp_path, figures):
    # a mean of AA over one seed of three is another quantity: the table sorts, and the plot
    # draws, PGD-20 over every run; the labels carry the shared rank of the table's # column
    (table,) = build_tables(_records(aa_seeds={0}))
    assert table.sort_by == "pgd20"
    plots.plot_table(table, tmp_path / "t.png", tmp_path / "t.csv")
    texts = _texts(figures[-1])
    assert any("rslad" in t and t.endswith("n=3") for t in texts), texts
    assert any(t.endswith("ard, n=1") for t in texts), texts
    assert "PGD-20" in figures[-1].axes[0].get_ylabel()


def test_the_title_promises_only_what_is_drawn(tmp_path, figures):
    (table,) = build_tables(_records(aa_seeds={0, 1, 2}))
    plots.plot_table(table, tmp_path / "a.png", tmp_path / "a.csv")
    title = figures[-1].axes[0].get_title()
    assert "x: paper" not in title and "bars ± 1 std over seeds" in title
    with_paper = _records(aa_seeds={0, 1, 2}, paper={"clean": 83.0, "aa": 52.5})
    (table,) = build_tables(with_paper)
    plots.plot_table(table, tmp_path / "b.png", tmp_path / "b.csv")
    assert "x: paper" in figures[-1].axes[0].get_title()
    (single,) = build_tables([plot_record("ard", 0, 0.85, 0.48)])
    plots.plot_table(single, tmp_path / "c.png", tmp_path / "c.csv")
    assert "seeds" not in figures[-1].axes[0].get_title()


def test_a_single_runs_curves_are_titled_by_the_run(tmp_path, figures):
    run = fake_run(tmp_path / "runs", "rslad-s0", "rslad", 0, [1.0, 0.5], [0.1, 0.2])
    plots.plot_curves([run], tmp_path / "out")
    title = figures[-1]._suptitle.get_text()
    assert title == "training curves of run rslad-s0"
