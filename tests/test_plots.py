"""``ardbench plot``: curves and table scatters (PNG beside the CSV it draws), and the
leaderboard's link to its scatter."""

from __future__ import annotations

import math

import matplotlib.image
import pandas as pd
import pytest
from plotkit import fake_run, plot_record

from ardbench.cli import main
from ardbench.plots import curves_table, draw_table_plots, scatter_paths, table_points
from ardbench.results.leaderboard import check_leaderboard, write_leaderboard
from ardbench.results.records import write_record
from ardbench.results.render import render_leaderboard
from ardbench.results.tables import build_tables

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake_runs(tmp_path):
    root = tmp_path / "runs"
    return root, [
        fake_run(root, "rslad-s0", "rslad", 0, [1.0, 0.5, 0.25], [0.1, 0.2, 0.3]),
        fake_run(root, "rslad-s1", "rslad", 1, [3.0, 1.5, 0.75], [0.3, 0.4, 0.5]),
        fake_run(root, "ard-s0", "ard", 0, [2.0, 1.0, 0.5], [0.2, 0.2, 0.2]),
    ]


def _png_ok(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    h, w, _ = matplotlib.image.imread(path).shape
    assert h > 100 and w > 100


def test_curves_average_seeds_of_one_recipe(fake_runs):
    _, runs = fake_runs
    table = curves_table(runs)
    rslad = table[table["group"].str.startswith("rslad") & (table["metric"] == "loss.kl_adv")]
    assert list(rslad["epoch"]) == [1, 2, 3] and set(rslad["n"]) == {2}
    assert list(rslad["mean"]) == [2.0, 1.0, 0.5]
    # sample std (ddof = 1) of {1, 3}, {0.5, 1.5}, {0.25, 0.75}
    assert list(rslad["std"]) == pytest.approx([math.sqrt(2), math.sqrt(2) / 2, math.sqrt(2) / 4])
    pgd = table[table["group"].str.startswith("rslad") & (table["metric"] == "probe.pgd10")]
    assert list(pgd["mean"]) == pytest.approx([0.2, 0.3, 0.4])
    ard = table[table["group"].str.startswith("ard") & (table["metric"] == "loss.kl_adv")]
    assert ard["std"].isna().all() and set(ard["n"]) == {1}
    assert set(table["metric"]) == {"loss.kl_adv", "loss.loss", "probe.clean", "probe.pgd10"}
    assert "examples" not in " ".join(table["metric"])


def test_plot_cli_writes_the_png_beside_its_csv(fake_runs, tmp_path, capsys):
    root, runs = fake_runs
    out = tmp_path / "plots"
    assert main(["plot", str(root), "--out", str(out)]) == 0
    _png_ok(out / "curves.png")
    drawn = pd.read_csv(out / "curves.csv")
    expected = curves_table(runs)
    assert len(drawn) == len(expected) == 3 * 4 * 2  # epochs x metrics x groups
    key = ["group", "metric", "epoch"]
    drawn, expected = (f.sort_values(key).reset_index(drop=True) for f in (drawn, expected))
    assert drawn[key].equals(expected[key])
    assert list(drawn["mean"]) == pytest.approx(list(expected["mean"]), rel=1e-5)
    # one run: the files go into the run's own directory
    assert main(["plot", str(runs[2].directory)]) == 0
    _png_ok(runs[2].directory / "curves.png")
    assert (runs[2].directory / "curves.csv").is_file()
    assert main(["plot", str(tmp_path / "nothing-here")]) == 2


def _records(aa=True):
    return [
        plot_record("rslad", 0, 0.80, 0.50 if aa else None, paper={"clean": 83.0, "aa": 52.5}),
        plot_record("rslad", 1, 0.82, 0.52 if aa else None, paper={"clean": 83.0, "aa": 52.5}),
        plot_record("ard", 0, 0.85, 0.48 if aa else None),
    ]


def test_table_points_are_the_rows_means_and_seed_stds():
    (table,) = build_tables(_records())
    pts = table_points(table).set_index("method")
    assert pts.loc["rslad", "clean_mean"] == pytest.approx(81.0)
    assert pts.loc["rslad", "clean_std"] == pytest.approx(100 * math.sqrt(2) * 0.01)
    assert pts.loc["rslad", "aa_mean"] == pytest.approx(51.0)
    assert pts.loc["rslad", "paper_aa"] == 52.5 and pts.loc["rslad", "seeds"] == 2
    assert math.isnan(pts.loc["ard", "aa_std"])  # one seed: no error bar
    (no_aa,) = build_tables(_records(aa=False))
    assert "pgd20_mean" in table_points(no_aa) and "aa_mean" not in table_points(no_aa)


def test_plot_table_cli_and_leaderboard_scatters(tmp_path, capsys):
    runs, out = tmp_path / "lb" / "runs", tmp_path / "lb"
    for r in _records():
        write_record(runs / f"{r['run_id']}.json", r)
    (table,) = build_tables(_records())
    png_rel, csv_rel = scatter_paths(table.relpath)
    assert png_rel == table.relpath.removesuffix(".md") + ".png"
    assert main(["plot", "--table", table.name, "--records", str(runs), "--out", str(out)]) == 0
    _png_ok(out / png_rel)
    drawn = pd.read_csv(out / csv_rel)
    assert list(drawn["method"]) == ["rslad", "ard"]  # the table's order (by AA)
    assert drawn["aa_mean"].tolist() == pytest.approx([51.0, 48.0])
    assert main(["plot", "--table", "no/such", "--records", str(runs)]) == 2
    # the leaderboard draws each table's scatter; an unchanged table is not redrawn
    (out / png_rel).unlink()
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    _png_ok(out / png_rel)
    assert draw_table_plots(_records(), out) == []
    assert draw_table_plots(_records()[:2], out) == [png_rel]  # the rows changed
    draw_table_plots([], out, removed=[table.relpath])
    assert not (out / png_rel).exists() and not (out / csv_rel).exists()


def test_tables_link_their_scatter_and_check_ignores_the_image(tmp_path):
    (table,) = build_tables(_records())
    text = render_leaderboard(_records())[table.relpath]
    stem = table.relpath.rsplit("/", 1)[1].removesuffix(".md")
    assert f"![Clean vs AA per row, mean ± std over seeds]({stem}.png)" in text
    assert f"`ardbench plot --table {table.name}`" in text
    no_aa = render_leaderboard(_records(aa=False))[table.relpath]
    assert f"![Clean vs PGD-20 per row, mean ± std over seeds]({stem}.png)" in no_aa
    runs, out = tmp_path / "runs", tmp_path / "out"
    for r in _records():
        write_record(runs / f"{r['run_id']}.json", r)
    write_leaderboard(runs, out)
    assert check_leaderboard(runs, out) == []  # no image drawn: the markdown is the same
    draw_table_plots(_records(), out)
    assert check_leaderboard(runs, out) == []
