"""Records are typed objects: ``load_record`` returns :class:`Record`, read by attribute, and a
loaded record writes back to exactly the bytes it was read from; one row identity is shared by
the leaderboard tables and ``ardbench.results()``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import ardbench
from ardbench.errors import ConfigError
from ardbench.protocols import PaperFigures, RunConfig
from ardbench.protocols.eps import format_eps
from ardbench.protocols.identity import config_hash, recipe_hash, row_hash
from ardbench.results import grouping
from ardbench.results.records import (
    Record,
    RecordError,
    as_record,
    example_record,
    load_record,
    read_json,
    record_bytes,
    write_record,
)
from ardbench.results.schema import COLUMNS, RecordModel
from ardbench.results.tables import build_tables

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboard" / "runs"


def _committed_records() -> list[Path]:
    out = []
    for path in sorted(COMMITTED.rglob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and "schema_version" in data:
            out.append(path)
    return out


def test_load_record_returns_a_typed_record(tmp_path):
    teacher_check = {
        "augmentation": "crop+flip",
        "n_train": 512,
        "augmented": 71.5,
        "unaugmented": 80,
        "n_test": 0,
        "test": None,
        "chance": 10.0,
        "warnings": [],
    }
    raw = example_record(
        teacher={"check": teacher_check},
        eval={"accuracy": {"clean": 0.8, "pgd20": 0.5, "aa": None}, "split": "test"},
    )
    path = write_record(tmp_path / "run", raw)
    rec = load_record(path)
    assert isinstance(rec, Record) and RecordModel is Record
    assert rec.run_id == raw["run_id"]
    assert rec.track.norm == "Linf" and rec.track.num_classes == 10
    assert rec.teacher is not None and rec.teacher_sha == "1" * 64
    assert rec.teacher.check is not None and rec.teacher.check.unaugmented == 80
    assert rec.student.arch == "resnet18" and rec.method.name == "kd"
    assert rec.eval.column("clean") == 0.8 and rec.eval.column("aa") is None
    assert rec.eval.column("cw") is None  # not evaluated at all
    assert rec.eval.split == "test" and rec.checkpoint_kind == "last"
    assert rec.code_version.label == "3333333"
    assert rec.config["train"]["epochs"] == 1  # an open block stays a dict
    # the dict form is the JSON document (for code written when records were dicts)
    assert rec["eval"]["accuracy"]["clean"] == 0.8 and rec.to_dict() == raw


def test_a_teacherless_record_has_no_teacher_sha():
    rec = as_record(
        example_record(teacher=None, method={"name": "pgd_at"}, config={"method": "pgd_at"})
    )
    assert rec.teacher is None and rec.teacher_sha == ""


def test_every_committed_record_writes_back_its_own_bytes():
    paths = _committed_records()
    assert len(paths) >= 40  # the committed leaderboard's records, not an empty folder
    for path in paths:
        rec = load_record(path)
        assert isinstance(rec, Record)
        assert record_bytes(rec) == path.read_bytes(), path


def test_numbers_keep_their_written_form():
    raw = example_record(wall_time_s=12, eval={"accuracy": {"clean": 1, "pgd20": 0}})
    rec = as_record(raw)
    assert record_bytes(rec) == record_bytes(raw)
    assert b'"wall_time_s": 12\n' in record_bytes(rec)  # not 12.0
    assert b'"clean": 1,' in record_bytes(rec)


def test_version_1_records_are_upgraded_on_load(tmp_path):
    raw = example_record()
    raw["schema_version"] = 1
    del raw["started_at"]
    del raw["track"]["official"]
    del raw["track"]["description"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    rec = load_record(path)
    assert rec.schema_version == 2 and rec.upgraded_from == 1
    assert rec.track.official is True and rec.started_at is None


def test_a_field_that_may_be_absent_is_not_null():
    raw = example_record()
    raw["eval"]["eps"] = None
    with pytest.raises(RecordError) as info:
        as_record(raw)
    assert info.value.field == "eval.eps"
    absent = copy.deepcopy(raw)
    del absent["eval"]["eps"]
    assert as_record(absent).eval.eps is None


# ---------------------------------------------------------------------------- paper figures


def test_paper_figures_take_every_evaluation_column():
    block = {"source": "T3", "tag": "checked", **{c: 50 for c in COLUMNS}}
    figures = PaperFigures.from_dict(block)
    assert figures.figures == {c: 50.0 for c in COLUMNS}
    rec = as_record(example_record(paper=block))
    assert rec.paper is not None and rec.paper.figure("aa") == 50.0
    assert rec.to_dict()["paper"] == block  # as written (50, not 50.0)
    one = PaperFigures.from_dict({"source": "T3", "aa": 52.5})
    assert one.aa == 52.5 and one.clean is None  # attribute access as before the model
    assert one.label("aa") == "52.50 (T3)" and one.to_dict() == {"source": "T3", "aa": 52.5}


def test_paper_figures_refuse_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key 'top1'"):
        PaperFigures.from_dict({"source": "T3", "top1": 50.0})
    with pytest.raises(ConfigError, match="paper.source"):
        PaperFigures.from_dict({"aa": 50.0})  # a recipe names its source
    with pytest.raises(RecordError) as info:
        as_record(example_record(paper={"aa": 150}))
    assert info.value.field == "paper.aa"


# ------------------------------------------------------------------------------- identities


def _config(seed: int, hot: bool) -> dict:
    """A kd run; ``hot``: another temperature (a method setting: the same table, another row)."""
    config = {"method": "kd", "train": {"seed": seed, "epochs": 1}}
    return {**config, "method_config": {"tau": 4.0}} if hot else config


def test_identity_hashes_say_what_they_include():
    base = _config(0, False)
    assert row_hash(base) == row_hash(_config(1, False))  # the seed varies within a row
    assert row_hash(base) != row_hash(_config(0, True))  # another method setting is another row
    deterministic = {**base, "train": {**base["train"], "deterministic": True}}
    assert row_hash(base) == row_hash(deterministic)  # changes no number: the same row
    assert recipe_hash(base) == row_hash(base)  # the API's older name, the same grouping
    assert config_hash(base) != config_hash(_config(1, False))  # the computation has a seed
    cfg = RunConfig.from_dict(base)
    assert cfg.row_hash() == row_hash(cfg.to_dict()) and cfg.config_hash() == config_hash(
        cfg.to_dict()
    )


def test_one_format_eps():
    assert grouping.format_eps is format_eps
    assert format_eps(8 / 255) == "8/255" and format_eps(0.031) == "0.031"


def _write_runs(root: Path) -> list[dict]:
    """Four kd runs that differ only in the seed and ``method_config.tau`` (a row setting)."""
    out = []
    for hot in (False, True):
        for seed in (0, 1):
            run_id = f"kd-s{seed}-{'tau4' if hot else 'tau1'}"
            raw = example_record(
                run_id=run_id,
                seed=seed,
                config=_config(seed, hot),
                eval={"accuracy": {"clean": 0.8 + seed / 100, "pgd20": 0.5}},
            )
            write_record(root / f"{run_id}.json", raw)
            out.append(raw)
    return out


def test_api_groups_runs_exactly_as_the_leaderboard_rows(tmp_path):
    _write_runs(tmp_path)
    (table,) = build_tables([load_record(p) for p in sorted(tmp_path.glob("*.json"))])
    table_rows = sorted(sorted(r.run_ids) for r in table.rows)
    assert table_rows == [["kd-s0-tau1", "kd-s1-tau1"], ["kd-s0-tau4", "kd-s1-tau4"]]

    df = ardbench.results(tmp_path)
    api_rows = sorted(sorted(g["run_id"]) for _, g in df.groupby("row_identity"))
    assert api_rows == table_rows
    # the means a user computes per row are the table's
    by_row = df.groupby("row_identity")["clean"].mean().sort_values()
    assert [round(v, 6) for v in by_row] == sorted(
        round(r.stats["clean"].mean or 0.0, 6) for r in table.rows
    )
    # the older column is the same grouping now (kept for compatibility)
    assert df.groupby("recipe_hash")["run_id"].apply(sorted).sort_values().tolist() == table_rows


def test_row_identity_is_the_row_key_of_the_rules_checkpoint():
    rec = as_record(example_record(checkpoint_rule="best-on-holdout"))
    key = grouping.row_key(rec)
    assert key.checkpoint == "best-on-holdout" and key.table == grouping.table_key(rec)
    assert grouping.row_identity(rec) != grouping.row_identity(rec, "last")
