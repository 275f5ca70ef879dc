"""Property-based tests of the record validator (issue 11, item 6): valid records round-trip
through a file unchanged; any mutation of a valid record is either accepted (and then can be
written and read back as its JSON form) or rejected with a RecordError that names a field, never another
exception."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ardbench.results.records import (
    RecordError,
    example_record,
    load_record,
    record_bytes,
    validate_record,
    write_record,
)
from ardbench.results.schema import COLUMNS, ID_PATTERN, RecordModel

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_leaf = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# what json.loads can hand the validator, and what a Python caller might: NaN, inf, tuples
any_value = st.recursive(
    json_leaf | st.floats() | st.just(float("inf")),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ids = st.from_regex(rf"\A{ID_PATTERN}\Z", fullmatch=True)


@st.composite
def valid_records(draw) -> dict[str, Any]:
    seed = draw(st.integers(0, 10**6))
    epochs = draw(st.integers(1, 1000))
    eps = draw(st.floats(1e-6, 1.0))
    norm = draw(st.sampled_from(["Linf", "L2"]))
    method = draw(st.from_regex(r"\A[a-z][a-z0-9_]{0,15}\Z", fullmatch=True))
    cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True))
    # whole numbers of points out of example_record's 100, attacked columns at most clean
    clean = draw(st.integers(0, 100))
    top = {c: clean if "clean" in cols else 100 for c in cols}
    accuracy = {c: draw(st.none() | st.integers(0, top[c]).map(lambda k: k / 100)) for c in cols}
    if "clean" in cols:
        accuracy["clean"] = clean / 100
    teacher = draw(
        st.none()
        | st.fixed_dictionaries(
            {"spec": st.text(min_size=1, max_size=30), "sha256": st.just("1" * 64)},
            optional={"resolved": st.none() | st.text(min_size=1, max_size=30)},
        )
    )
    paper = draw(
        st.none()
        | st.fixed_dictionaries(
            {}, optional={c: st.none() | st.floats(0.0, 100.0) for c in ("clean", "aa")}
        )
    )
    record = example_record(
        run_id=draw(ids),
        seed=seed,
        epochs=epochs,
        teacher=teacher,
        paper=paper,
        student={"spec": draw(st.text(min_size=1, max_size=30)), "arch": draw(ids)},
        method={"name": method, "config": draw(st.dictionaries(st.text(max_size=8), json_value))},
        config={"method": method, "train": {"seed": seed, "epochs": epochs}},
        wall_time_s=draw(st.floats(0.0, 1e7)),
        recipe=draw(st.none() | st.text(min_size=1, max_size=30)),
    )
    record["track"].update(eps=eps, norm=norm)
    record["eval"].update(eps=eps, norm=norm, accuracy=accuracy)
    record["hardware"]["extra"] = draw(json_value)
    if draw(st.booleans()):
        record["method"]["source_sha256"] = "a" * 64
    return record


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _round_trip(record: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_record(Path(tmp) / "run", record)
        return load_record(path).to_dict()


@SETTINGS
@given(valid_records())
def test_valid_records_round_trip(record):
    validate_record(record)
    assert _round_trip(record) == record
    assert json.loads(record_bytes(record)) == record


@SETTINGS
@given(valid_records(), st.data())
def test_mutations_are_accepted_and_valid_or_rejected_naming_a_field(record, data):
    mutated = copy.deepcopy(record)
    paths = _paths(mutated)
    path = data.draw(st.sampled_from(paths))
    *parents, last = path
    node = mutated
    for p in parents:
        node = node[p]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        node[last] = data.draw(any_value)
    elif action == "delete":
        del node[last]
    else:
        target = node[last] if isinstance(node[last], dict) else mutated
        target[data.draw(st.text(min_size=1, max_size=8))] = data.draw(any_value)
    try:
        validate_record(mutated)
    except RecordError as exc:
        assert exc.field, str(exc)
        top = exc.field.split(".")[0].split("[")[0]
        known = {*mutated, *RecordModel.model_fields}
        assert exc.field in known or top in known, exc.field
        return
    # accepted: it can be written, and reads back as its JSON form (a tuple as a list)
    assert _round_trip(mutated) == json.loads(record_bytes(mutated))
