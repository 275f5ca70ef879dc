from __future__ import annotations

import copy
import json
import re
import threading

import numpy as np
import pytest

from ardbench.results.records import (
    SCHEMA_VERSION,
    RecordError,
    RecordExistsError,
    example_record,
    find_records,
    load_record,
    protocol_hash,
    record_bytes,
    upgrade_record,
    validate_record,
    write_record,
)


def _set(d: dict, dotted: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = dotted.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return d


_DELETE = object()


def v1_of(record: dict) -> dict:
    """What the trainer wrote before schema 2."""
    d = copy.deepcopy(record)
    d["schema_version"] = 1
    d.pop("started_at")
    d["track"].pop("official")
    d["track"].pop("description")
    return d


def test_example_record_is_valid():
    validate_record(example_record())
    assert example_record()["schema_version"] == SCHEMA_VERSION == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("eval.accuracy.pgd20", 1.5, "fraction in [0, 1]"),
        ("eval.accuracy.clean", float("nan"), "fraction"),
        ("eval.accuracy.aa", True, "fraction"),
        ("eval.n_examples", 0, "integer >= 1"),
        ("track.norm", "L3", "one of Linf, L2"),
        ("track.eps", 0.0, "eps > 0"),
        ("track.data_fingerprint", _DELETE, "missing"),
        ("track.official", "yes", "true or false"),
        ("teacher.sha256", "abc", "sha256"),
        ("seed", -1, "integer >= 0"),
        ("epochs", 2.5, "integer"),
        ("run_id", "../escape", "run id"),
        ("finished_at", "2025-01-01T00:00:00", "no timezone"),
        ("started_at", "yesterday", "ISO-8601"),
        ("method.name", "MyMethod", "snake_case"),
        ("code_version.git_sha", "xyz", "git sha"),
        ("versions.torch", _DELETE, "missing"),
        ("paper.aa", 150.0, "percentage"),
        ("paper.clean", "82.6%", "percentage"),
        ("checkpoint.sha256", "0" * 63, "sha256"),
    ],
)
def test_validation_names_the_bad_field(field, value, message):
    base = example_record(paper={"source": "Table 2", "clean": 82.6, "aa": 50.1})
    validate_record(base)
    bad = _set(base, field, value)
    with pytest.raises(RecordError, match=re.escape(message)) as info:
        validate_record(bad)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_unknown_top_level_field_is_named():
    bad = example_record()
    bad["sede"] = 0
    with pytest.raises(RecordError, match="unknown field") as info:
        validate_record(bad)
    assert info.value.field == "sede"


@pytest.mark.parametrize(
    "field, value",
    [
        ("eval.eps", 4 / 255),  # evaluated at another radius than the track says
        ("eval.norm", "L2"),
        ("config.train.seed", 3),
        ("config.method", "trades"),
        ("code_version", {"git_sha": None, "dirty": None, "version": None}),
        ("checkpoint", {"sha256": "4" * 64}),
    ],
)
def test_cross_field_rules(field, value):
    with pytest.raises(RecordError) as info:
        validate_record(_set(example_record(), field, value))
    assert info.value.field == field


def test_extra_nested_keys_are_allowed():
    rec = example_record()
    rec["eval"]["aa_breakdown"] = {"apgd-ce": 0.5}
    rec["eval"]["worst_class"] = {"clean": 0.6}
    rec["hardware"]["gpu"] = "H100"
    validate_record(rec)


def test_v1_record_is_upgraded_on_load(tmp_path):
    old = v1_of(example_record(track={"dataset": "npz:/data/cifar10_jpeg.npz"}))
    with pytest.raises(RecordError, match="load_record"):
        validate_record(old)  # a raw v1 dict is not a current record...
    path = tmp_path / "record.json"
    path.write_text(json.dumps(old))
    rec = load_record(tmp_path)  # ...but loads as one
    assert rec["schema_version"] == 2 and rec["upgraded_from"] == 1
    assert rec["track"]["official"] is False and rec["started_at"] is None
    assert json.loads(path.read_text()) == old  # the file itself is never rewritten


@pytest.mark.parametrize(
    "version, message",
    [(3, "newer ardbench"), (0, "unknown version 0"), ("2", "expected an integer")],
)
def test_unknown_or_future_versions_are_rejected(tmp_path, version, message):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**example_record(), "schema_version": version}))
    with pytest.raises(RecordError, match=message) as info:
        load_record(path)
    assert str(path) in str(info.value) and info.value.field == "schema_version"


def test_not_a_record(tmp_path):
    with pytest.raises(RecordError, match="not an ardbench run record"):
        upgrade_record({"arch": "resnet18"})
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        load_record(bad)
    with pytest.raises(FileNotFoundError):
        load_record(tmp_path / "missing.json")


def test_write_record_is_atomic_and_never_overwrites(tmp_path):
    rec = example_record()
    path = write_record(tmp_path / "run", rec)
    assert path == tmp_path / "run" / "record.json"
    assert path.read_bytes() == record_bytes(rec)
    other = example_record(wall_time_s=2.0)
    with pytest.raises(RecordExistsError, match="already exists"):
        write_record(path, other)
    assert path.read_bytes() == record_bytes(rec)
    assert sorted(p.name for p in path.parent.iterdir()) == ["record.json"]  # no temp files


def test_write_record_validates_first(tmp_path):
    with pytest.raises(RecordError) as info:
        write_record(tmp_path / "x.json", _set(example_record(), "eval.accuracy.clean", 80.0))
    assert info.value.field == "eval.accuracy.clean"
    assert not (tmp_path / "x.json").exists()


def test_concurrent_writers_never_clobber(tmp_path):
    target = tmp_path / "runs" / "same" / "record.json"
    n = 8
    records = [example_record(wall_time_s=float(i)) for i in range(n)]
    barrier = threading.Barrier(n)
    won, lost, errors = [], [], []

    def writer(i):
        barrier.wait()
        try:
            write_record(target, records[i])
            won.append(i)
        except RecordExistsError:
            lost.append(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(won) == 1 and len(lost) == n - 1
    assert target.read_bytes() == record_bytes(records[won[0]])
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_find_records_skips_other_json(tmp_path):
    run = tmp_path / "runs" / "a"
    write_record(run, example_record(run_id="a"))
    (run / "config.json").write_text(json.dumps({"method": "kd"}))
    (run / "model.json").write_text(json.dumps({"arch": "resnet18"}))
    write_record(tmp_path / "runs" / "copies" / "b.json", example_record(run_id="b"))
    (tmp_path / "runs" / ".hidden.json").write_text(json.dumps(example_record(run_id="c")))
    found = [r["run_id"] for _, r in find_records(tmp_path / "runs")]
    assert found == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no directory"):
        list(find_records(tmp_path / "nope"))


def test_protocol_hash_ignores_seed_and_provenance():
    base = example_record(
        config={
            "method": "kd",
            "recipe": "a.yaml",
            "device": "cpu",
            "train": {"seed": 0, "epochs": 1, "lr": 0.1},
        }
    )
    seed1 = copy.deepcopy(base)
    seed1["config"]["train"]["seed"] = 1
    seed1["config"]["recipe"] = "b.yaml"
    seed1["config"]["device"] = "cuda"
    assert protocol_hash(base) == protocol_hash(seed1)
    lr = copy.deepcopy(base)
    lr["config"]["train"]["lr"] = 0.05
    assert protocol_hash(base) != protocol_hash(lr)


def test_the_trainers_record_validates(tmp_path):
    """A real (tiny) run: what build_record produces passes validate_record."""
    from ardbench.cli import main

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 40)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])
    assert (
        main(
            [
                "run",
                "--method",
                "pgd_at",
                "--dataset",
                f"npz:{tmp_path / 'd.npz'}",
                "--student",
                "small_cnn",
                "--epochs",
                "1",
                "--set",
                "train.batch_size=20",
                "--set",
                "attack.steps=1",
                "--runs",
                str(tmp_path / "runs"),
                "--quiet",
            ]
        )
        == 0
    )
    (run_dir,) = (tmp_path / "runs").iterdir()
    raw = json.loads((run_dir / "record.json").read_text())
    if raw["schema_version"] == SCHEMA_VERSION:
        validate_record(raw)
    rec = load_record(run_dir)
    assert rec["track"]["official"] is False
    assert rec["eval"]["accuracy"]["clean"] is not None
    from ardbench.io import file_sha256
    from ardbench.methods import pgd_at

    assert rec["method"]["source_sha256"] == file_sha256(pgd_at.__file__)
    assert isinstance(rec["code_version"]["dirty"], bool)
