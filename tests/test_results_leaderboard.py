from __future__ import annotations

import copy
import hashlib
import io
import json
import random

import pytest
from rich.console import Console

from ardbench.cli import main
from ardbench.protocols import get_protocol, protocol_ref
from ardbench.results.compare import (
    NoTableError,
    Stat,
    compare_method,
    compare_record,
    delta,
    render_comparison,
)
from ardbench.results.leaderboard import (
    add_records,
    check_leaderboard,
    collect_records,
)
from ardbench.results.records import RecordError, example_record, record_bytes, write_record
from ardbench.results.render import GENERATED_MARK, render_leaderboard
from ardbench.results.tables import build_tables

TABLE = "standard-cifar10/robustbench-Zhang2019Theoretically-11111111__resnet18.md"


def run_config(method: str, seed: int, **changes) -> dict:
    """The resolved config of a standard-cifar10 run; ``changes``: {"train.lr": 0.05, ...}."""
    cfg = {"method": method, "protocol": "standard-cifar10"}
    cfg.update(copy.deepcopy(get_protocol("standard-cifar10").sections()))
    cfg["train"]["seed"] = seed
    for key, value in changes.items():
        if "." in key:
            section, sub = key.split(".")
            cfg[section][sub] = value
        else:
            cfg[key] = value
    return cfg


def rec(method: str, seed: int, acc: dict, *, recipe: str | None = None, **kw) -> dict:
    """A hand-made record: ``method`` run with ``seed`` under standard-cifar10 (``config``:
    changes to its values), accuracies as fractions."""
    method_block = {
        "name": method,
        "unofficial": kw.pop("unofficial", False),
        "teacher_in_attack": kw.pop("teacher_in_attack", False),
    }
    config = run_config(method, seed, **kw.pop("config", {}))
    fingerprint = kw.get("track", {}).get("data_fingerprint", "0" * 64)
    return example_record(
        run_id=kw.pop("run_id", f"{method}-s{seed}"),
        seed=seed,
        epochs=config["train"]["epochs"],
        method=method_block,
        recipe=recipe if recipe is not None else "baselines/common/standard.yaml",
        config=config,
        protocol=protocol_ref(config, fingerprint),
        eval={"accuracy": acc, "n_examples": kw.pop("n_examples", 10000)},
        **kw,
    )


PAPER = {"source": "Table X of a made-up paper", "clean": 83.0, "aa": 52.5}


def two_by_two() -> list[dict]:
    return [
        rec(
            "rslad",
            0,
            {"clean": 0.80, "fgsm": 0.60, "pgd20": 0.55, "cw": 0.52, "aa": 0.50},
            paper=PAPER,
            unofficial=True,
            teacher_in_attack=True,
        ),
        rec(
            "rslad",
            1,
            {"clean": 0.82, "fgsm": 0.62, "pgd20": 0.57, "cw": 0.54, "aa": 0.52},
            paper=PAPER,
            unofficial=True,
            teacher_in_attack=True,
        ),
        rec("ard", 0, {"clean": 0.85, "pgd20": 0.50, "aa": 0.48}),
        rec("ard", 1, {"clean": 0.86, "pgd20": 0.52, "aa": 0.47}),
    ]


ROW_RSLAD = (
    "| 1 | rslad | standard | 81.00 ± 1.41 | 61.00 ± 1.41 | 56.00 ± 1.41 | 53.00 ± 1.41 "
    "| 51.00 ± 1.41 | 52.50 | 2 | 200 | 3333333 | unverified | unofficial re-implementation; "
    "teacher in attack |"
)
# AA 51.00 ± 1.41 vs 47.50 ± 0.71 over two seeds each: the 95 % intervals (pooled std 1.12)
# touch, 49.04 vs 49.05, so the rows share rank 1
ROW_ARD = (
    "| 1 | ard | standard | 85.50 ± 0.71 | — | 51.00 ± 1.41 | — | 47.50 ± 0.71 | — | 2 | 200 "
    "| 3333333 | unverified |  |"
)


def write_runs(root, records, *, shuffle_seed=None, nested=False):
    records = list(records)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(records)
    for i, r in enumerate(records):
        if nested:
            write_record(root / f"batch{i % 2}" / f"{i:02d}-{r['run_id']}", r)
        else:
            write_record(root / f"{r['run_id']}.json", r)
    return root


def test_two_methods_two_seeds_mean_and_std():
    files = render_leaderboard(two_by_two())
    assert sorted(files) == ["README.md", TABLE]
    text = files[TABLE]
    lines = text.splitlines()
    assert ROW_RSLAD in lines and ROW_ARD in lines
    assert lines.index(ROW_RSLAD) < lines.index(ROW_ARD)  # sorted by AA, descending
    assert GENERATED_MARK in text.lower()
    assert "Sorted by AA (mean, descending; every run of every ranked row has it)." in text
    assert "pooled seed std of AA, 1.12 points (pooled over the 2 rows" in text
    assert "This table's runs: 4 unverified." in text
    assert "fingerprint `sha256:" + "0" * 64 + "`" in text
    assert "`robustbench:Zhang2019Theoretically`; weights `sha256:" + "1" * 64 in text
    assert "n = 10000" in text
    assert "- Row 1, rslad / standard: Clean 83.00, AA 52.50 (Table X of a made-up paper)." in text
    assert "- AutoAttack build: pyautoattack (version not recorded)" in text
    assert "Not the official dataset" not in text
    assert text.endswith("\n") and "\r" not in text
    assert f"[{TABLE}]({TABLE})" in files["README.md"]
    assert "| rslad 51.00 (AA); rank 1 shared by 2 rows |" in files["README.md"]


def test_one_seed_shows_a_dash_and_sorts_by_pgd20_without_aa():
    records = [
        rec("kd", 0, {"clean": 0.9, "pgd20": 0.30}),
        rec("ard", 0, {"clean": 0.8, "pgd20": 0.45}),
        rec("ard", 1, {"clean": 0.8, "pgd20": 0.47}),
    ]
    text = render_leaderboard(records)[TABLE]
    assert "Sorted by PGD-20 (mean, descending): no row has AutoAttack." in text
    # ard 46.00 ± 1.96 (two seeds), kd 30.00 ± 2.77 (one seed, the pooled std 1.41): apart
    assert "| 1 | ard | standard | 80.00 ± 0.00 | — | 46.00 ± 1.41 | — | — | — | 2 |" in text
    assert "| 2 | kd | standard | 90.00 ± — | — | 30.00 ± — | — | — | — | 1 |" in text
    assert "Not evaluated in this table: FGSM, CW∞, AA." in text


def test_aa_on_some_rows_only_orders_by_pgd20_and_the_header_says_so():
    # AA first, then the rest, would rank ard above a kd row far stronger on every column
    # both have, only because ard was attacked longer
    records = [
        rec("kd", 0, {"clean": 0.9, "pgd20": 0.60}),
        rec("ard", 0, {"clean": 0.8, "pgd20": 0.4, "aa": 0.3}),
    ]
    text = render_leaderboard(records)[TABLE]
    assert "AutoAttack is missing for some runs" in text and "AA cannot order the table" in text
    # one seed each: no spread measured, so the rows are listed, not ranked
    assert text.index("| – | kd") < text.index("| – | ard")
    assert "rows are listed by PGD-20, not ranked" in text
    records[0]["eval"]["accuracy"]["aa"] = 0.2
    text = render_leaderboard(records)[TABLE]
    assert "Sorted by AA (mean, descending; every run of every ranked row has it)." in text
    assert text.index("| – | ard") < text.index("| – | kd")
    # AA on one of kd's two seeds: a mean over fewer runs cannot order the table
    records.append(rec("kd", 1, {"clean": 0.9, "pgd20": 0.62}))
    text = render_leaderboard(records)[TABLE]
    assert "Sorted by PGD-20 (mean, descending): AutoAttack is missing for some runs" in text
    assert "| 20.00 ± — (1 of 2 runs) |" in text
    assert text.index("| 1 | kd") < text.index("| 2 | ard")


def test_other_data_and_overrides_get_their_own_table_and_row():
    npz = rec(
        "ard",
        0,
        {"clean": 0.7, "pgd20": 0.3},
        run_id="npz-run",
        track={
            "dataset": "npz:/home/me/cifar10_jpeg.npz",
            "official": False,
            "data_fingerprint": "a" * 64,
        },
        config={"dataset": "npz:/home/me/cifar10_jpeg.npz"},
    )
    other_lr = rec(
        "ard", 1, {"clean": 0.7, "pgd20": 0.3}, run_id="lr-run", config={"train.lr": 0.05}
    )
    other_mc = rec("ard", 1, {"clean": 0.7, "pgd20": 0.3}, run_id="mc-run")
    other_mc["method"]["config"] = {"tau": 1.0}
    other_mc["config"]["method_config"] = {"tau": 1.0}
    files = render_leaderboard([*two_by_two(), npz, other_lr, other_mc])
    (npz_table,) = [
        f
        for f in files
        if f.endswith("_aaaaaaaa/robustbench-Zhang2019Theoretically-11111111__resnet18.md")
    ]
    assert npz_table.startswith("standard-cifar10+")  # another dataset: a modified protocol
    assert "**Not the official dataset.**" in files[npz_table]
    assert "**Modified protocol**" in files[npz_table]
    assert "/home/me" not in files[npz_table]  # machine paths stay out of the tables
    assert "(npz copy)" in files["README.md"]
    # another learning rate is another protocol: its own (modified) table
    (lr_table,) = [f for f in files if "lr-run" in files[f] and f != "README.md"]
    assert lr_table.startswith("standard-cifar10+") and lr_table != npz_table
    # a modified table says what was changed, and from which protocol
    assert "Changed from `standard-cifar10`: train.lr = 0.05 (registered 0.1)." in files[lr_table]
    assert "Changed from `standard-cifar10`: the data (below)." in files[npz_table]
    # another method config is the same protocol: the same table, its own row
    main_table = files[TABLE]
    assert main_table.count("| ard | standard (config ") == 2  # two method configs, two rows


def test_rendering_is_byte_stable_and_independent_of_file_order(tmp_path):
    records = [*two_by_two(), rec("kd", 0, {"clean": 0.9, "pgd20": 0.3})]
    a = write_runs(tmp_path / "a", records, shuffle_seed=1)
    b = write_runs(tmp_path / "b", records, shuffle_seed=2, nested=True)
    ra, rb = render_leaderboard(collect_records(a)), render_leaderboard(collect_records(b))
    assert ra == rb
    assert render_leaderboard(records) == render_leaderboard(list(reversed(records))) == ra
    out = tmp_path / "out"
    assert main(["leaderboard", "--runs", str(a), "--out", str(out)]) == 0
    first = {p: p.read_bytes() for p in out.rglob("*.md")}
    assert main(["leaderboard", "--runs", str(b), "--out", str(out)]) == 0
    assert {p: p.read_bytes() for p in out.rglob("*.md")} == first


def test_check_fails_on_edited_missing_and_stale_tables(tmp_path, capsys):
    runs = write_runs(tmp_path / "lb" / "runs", two_by_two())
    out = tmp_path / "lb"
    args = ["leaderboard", "--runs", str(runs), "--out", str(out)]
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    (out / "NOTES.md").write_text("hand-written notes are not generated files\n")
    assert main([*args, "--check"]) == 0
    capsys.readouterr()

    table = out / TABLE
    original = table.read_text()
    table.write_text(original.replace("81.00 ± 1.41", "82.00 ± 1.41"))
    assert main([*args, "--check"]) == 1
    assert f"differs: {table}" in capsys.readouterr().err

    table.unlink()
    assert main([*args, "--check"]) == 1
    assert f"missing: {table}" in capsys.readouterr().err

    table.write_text(original)
    gone = runs / "gone.json"  # a record in a table of its own, then withdrawn
    lr = {"train.lr": 0.05}
    write_record(gone, rec("ard", 0, {"clean": 0.9, "pgd20": 0.5}, run_id="gone", config=lr))
    before = set(out.rglob("*.md"))
    assert main(args) == 0
    (stale,) = set(out.rglob("*.md")) - before
    gone.unlink()
    assert main([*args, "--check"]) == 1
    assert f"extra: {stale}" in capsys.readouterr().err
    assert main(args) == 0  # regenerating removes the stale table
    assert not stale.exists() and not stale.parent.exists()
    assert main([*args, "--check"]) == 0

    write_record(runs / "new.json", rec("kd", 0, {"clean": 0.9, "pgd20": 0.3}, run_id="new"))
    assert main([*args, "--check"]) == 1  # a new record makes the committed table stale
    assert "differs:" in capsys.readouterr().err


def test_empty_and_missing_runs_dir(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["leaderboard", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 0
    assert "No records yet" in (tmp_path / "README.md").read_text()
    assert main(["leaderboard", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "no directory" in capsys.readouterr().err


def test_same_run_twice_counts_once_but_conflicts_are_errors(tmp_path):
    r = two_by_two()[0]
    write_record(tmp_path / "runs" / "rundir", r)  # a run directory ...
    write_record(tmp_path / "runs" / "copy" / f"{r['run_id']}.json", r)  # ... and its copy
    assert len(collect_records(tmp_path / "runs")) == 1
    write_record(tmp_path / "runs" / "other.json", {**r, "wall_time_s": 9.0})
    with pytest.raises(RecordError, match="also the run id of a different record"):
        collect_records(tmp_path / "runs")


def test_add_copies_records_only(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "rslad-s0"
    record = two_by_two()[0]
    # --add checks the weights' hash even without re-evaluation (these are not a network)
    record["checkpoint"]["sha256"] = hashlib.sha256(b"weights").hexdigest()
    write_record(run_dir, record)
    (run_dir / "model.pt").write_bytes(b"weights")
    lb = tmp_path / "lb"
    argv = ["leaderboard", "--runs", str(lb / "runs"), "--out", str(lb), "--add", str(run_dir)]
    assert main([*argv, "--no-verify"]) == 0
    copied = lb / "runs" / TABLE.removesuffix(".md") / "rslad-s0.json"
    assert copied.read_bytes() == (run_dir / "record.json").read_bytes()
    assert not list(lb.rglob("*.pt"))
    assert (lb / TABLE).is_file()
    ((dest, status),) = add_records([run_dir], lb / "runs")
    assert status == "already there" and dest == copied


# ------------------------------------------------------------------------------- compare


def third_run() -> dict:
    return rec("rslad", 2, {"clean": 0.815, "fgsm": 0.61, "pgd20": 0.56, "cw": 0.53, "aa": 0.515})


def test_compare_run_deltas_and_noise():
    comp = compare_record(third_run(), two_by_two())
    assert [rc.row.method for rc in comp.rows] == ["rslad", "ard"]
    same, ard = comp.rows
    assert same.same_row and not ard.same_row
    assert same.deltas["clean"].delta_pp == pytest.approx(0.5)
    assert same.deltas["clean"].inside_noise  # 0.5 pp <= 2 x 1.41 pp
    assert same.deltas["clean"].noise_pp == pytest.approx(2 * 100 * 0.0141421356, rel=1e-6)
    assert ard.deltas["clean"].delta_pp == pytest.approx(-4.0)
    assert not ard.deltas["clean"].inside_noise  # 4 pp > 2 x 0.71 pp
    assert ard.deltas["aa"].delta_pp == pytest.approx(4.0) and not ard.deltas["aa"].inside_noise
    assert ard.deltas["fgsm"].delta_pp is None  # ard never ran FGSM

    buf = io.StringIO()
    render_comparison(comp, Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "+0.50 ≈" in out and "-4.00" in out and "-4.00 ≈" not in out and "+4.00" in out
    assert "81.50" in out  # our absolute clean accuracy


def test_compare_leaves_the_run_itself_out():
    records = [*two_by_two(), third_run()]
    comp = compare_record(third_run(), records)
    assert comp.excluded == ["rslad-s2"]
    assert comp.rows[0].row.runs == 2


def test_default_noise_without_seeds():
    one = Stat(0.50, None, 1)
    assert delta(Stat(0.505, None, 1), one, 10000).inside_noise  # 0.5 pp <= 2 x 0.5 pp
    assert not delta(Stat(0.52, None, 1), one, 10000).inside_noise  # 2 pp
    assert delta(Stat(0.60, None, 1), one, 20).inside_noise  # n = 20: one point is 5 pp
    assert delta(Stat(0.60, None, 1), one, 20).sigma_from == "default"


def test_compare_method_aggregate():
    (comp,) = compare_method("rslad", two_by_two())
    assert comp.ours_runs == 2 and [rc.row.method for rc in comp.rows] == ["ard"]
    d = comp.rows[0].deltas
    assert d["clean"].delta_pp == pytest.approx(-4.5)
    assert d["clean"].sigma_from == "seeds"
    assert d["clean"].noise_pp == pytest.approx(
        2 * 100 * (0.0141421356**2 + 0.00707106781**2) ** 0.5
    )
    with pytest.raises(NoTableError, match="no runs of method 'nope'"):
        compare_method("nope", two_by_two())
    with pytest.raises(NoTableError, match="in table"):
        compare_method("rslad", two_by_two(), pair="elsewhere/x__y")


def test_compare_cli(tmp_path, capsys):
    runs = write_runs(tmp_path / "lb" / "runs", two_by_two())
    write_record(tmp_path / "mine" / "rslad-s2", third_run())
    assert (
        main(["compare", str(tmp_path / "mine" / "rslad-s2"), "--leaderboard-runs", str(runs)]) == 0
    )
    out = capsys.readouterr().out
    assert "ours" in out and "+0.50" in out and "≈" in out
    assert (
        main(
            [
                "compare",
                str(tmp_path / "mine"),
                "--method",
                "rslad",
                "--leaderboard-runs",
                str(runs),
                "--pair",
                TABLE,
            ]
        )
        == 0
    )
    assert "method rslad (standard, 1 run)" in capsys.readouterr().out
    lonely = rec(
        "kd",
        0,
        {"clean": 0.5},
        run_id="lonely",
        student={"spec": "mobilenetv2", "arch": "mobilenetv2"},
    )
    write_record(tmp_path / "lonely.json", lonely)
    assert main(["compare", str(tmp_path / "lonely.json"), "--leaderboard-runs", str(runs)]) == 1
    assert "nothing to compare" in capsys.readouterr().err


def test_v1_records_render_like_v2(tmp_path):
    records = two_by_two()
    v1 = copy.deepcopy(records[0])
    v1["schema_version"] = 1
    v1.pop("started_at")
    v1["track"].pop("official")
    v1["track"].pop("description")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.json").write_text(json.dumps(v1))
    for r in records[1:]:
        write_record(tmp_path / "runs" / f"{r['run_id']}.json", r)
    assert render_leaderboard(collect_records(tmp_path / "runs")) == render_leaderboard(records)
    assert build_tables(records)[0].rows[0].runs == 2
    assert record_bytes(records[0])  # records themselves are untouched
    assert check_leaderboard(tmp_path / "runs", tmp_path / "nowhere")  # nothing rendered yet


def test_holdout_runs_are_kept_apart_and_not_added(tmp_path):
    held = rec("ard", 0, {"clean": 0.9, "pgd20": 0.6}, run_id="held")
    held["eval"]["split"] = "holdout: last 500 training examples"
    files = render_leaderboard([*two_by_two(), held])
    holdout_table = TABLE.replace("standard-cifar10/", "standard-cifar10_holdout/")
    assert (
        holdout_table in files and "| ard |" not in files[holdout_table].split("| rslad |")[0][-1:]
    )
    assert "**Evaluated on held-out training examples, not the test set**" in files[holdout_table]
    assert "held" not in files[TABLE]  # the test-set table is untouched
    write_record(tmp_path / "held", held)
    with pytest.raises(RecordError, match="selection run") as info:
        add_records([tmp_path / "held"], tmp_path / "lb")
    assert info.value.field == "eval.split"
    assert not (tmp_path / "lb").exists()


def test_fractional_eps_in_255ths():
    def at(eps):
        r = rec("ard", 0, {"clean": 0.9, "pgd20": 0.6}, config={"attack.eps": eps})
        r["track"]["eps"] = r["eval"]["eps"] = eps
        (path,) = [p for p in render_leaderboard([r]) if p != "README.md"]
        return render_leaderboard([r])[path]

    assert "Linf ε = 0.5/255;" in at(0.5 / 255)
    assert "Linf ε = 2/255;" in at(2 / 255)
    assert "Linf ε = 0.031;" in at(0.031)  # TRADES's eps is not 8/255


def test_teacherless_methods_are_reference_rows_of_the_teacher_tables():
    records = two_by_two() + [rec("pgd_at", 0, {"clean": 0.7, "pgd20": 0.45}, teacher=None)]
    tables = build_tables(records)
    assert [t.relpath for t in tables] == [TABLE]  # no separate no-teacher table
    row = next(r for r in tables[0].rows if r.method == "pgd_at")
    assert "no teacher (reference row)" in row.notes
    # the title and the index name the table's teacher, not the reference row's "no-teacher"
    rendered = render_leaderboard(records)
    assert (
        rendered[TABLE]
        .splitlines()[0]
        .endswith("teacher robustbench-Zhang2019Theoretically → resnet18")
    )
    assert "| no-teacher |" not in rendered["README.md"]
    alone = build_tables([rec("pgd_at", 0, {"clean": 0.7, "pgd20": 0.45}, teacher=None)])
    assert len(alone) == 1 and "no-teacher__resnet18" in alone[0].relpath
    assert "no teacher (reference row)" not in alone[0].rows[0].notes


def test_teacherless_rows_say_what_they_are():
    from ardbench.results.tables import _teacherless_note

    assert _teacherless_note("pgd_at") == "no teacher (reference row)"
    assert "peer" in _teacherless_note("peeraid")  # a method, not a reference row
    assert _teacherless_note("not_installed_here") == "no teacher (reference row)"
