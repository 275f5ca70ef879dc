"""Property tests: the npz loader and the eps parser on arbitrary input.

The npz loader either returns a valid :class:`Dataset` or raises an :class:`ArdbenchError`
(one line on the command line), never another exception; the eps parser round-trips what it
prints and refuses anything that is not a number with a :class:`ConfigError`.
"""

from __future__ import annotations

import math
import os
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ardbench.data import Dataset, load_dataset
from ardbench.errors import ArdbenchError, ConfigError
from ardbench.protocols import Eps, format_eps, parse_eps
from ardbench.protocols.sections import check_radius

# more examples for a soak:
# ARDBENCH_HYPOTHESIS_EXAMPLES=5000 pytest tests/test_safety_hostile_property.py
EXAMPLES = int(os.environ.get("ARDBENCH_HYPOTHESIS_EXAMPLES", "150"))
many = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ npz loader

DTYPES = st.sampled_from(
    [
        np.uint8,
        np.int8,
        np.int16,
        np.int64,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
        np.bool_,
        np.complex64,
        ">f4",
        ">i8",
        "<U2",
        "S3",
        "datetime64[s]",
        [("a", "<i4"), ("b", "<f4")],
    ]
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6)


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind in "fc":
        elements = st.one_of(
            st.floats(-2, 300, width=32), st.sampled_from([np.nan, np.inf, -np.inf])
        )
        if dtype.kind == "c":
            return draw(hnp.arrays(dtype, shape, elements=st.complex_numbers(max_magnitude=5)))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    """Mostly plausible image/label arrays (often a valid dataset), sometimes anything."""
    out: dict[str, np.ndarray] = {}
    plausible = draw(st.integers(0, 3)) > 0
    layout = draw(st.sampled_from([(4, 4, 3), (3, 4, 4), (4, 4), (1, 4, 4), (4, 4, 4)]))
    dt = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    for split in ("train", "test"):
        if split == "train" and draw(st.booleans()):
            continue
        n = draw(st.integers(0 if not plausible else 1, 5))
        if plausible:
            if dt == np.uint8:
                x = draw(hnp.arrays(dt, (n, *layout)))
            else:
                lo = -0.5 if draw(st.integers(0, 5)) == 0 else 0.0
                x = draw(hnp.arrays(dt, (n, *layout), elements=st.floats(lo, 1.0, width=32)))
            wild = draw(st.integers(0, 5)) == 0
            ys = st.integers(-1, 1200) if wild else st.integers(0, 9)
            size = n + (draw(st.integers(-1, 1)) if wild else 0)
            y = np.asarray(draw(st.lists(ys, min_size=size, max_size=size)), dtype=np.int64)
        else:
            x, y = draw(arrays()), draw(arrays())
        if draw(st.integers(0, 19)):
            out[f"x_{split}"] = x
        if draw(st.integers(0, 19)):
            out[f"y_{split}"] = y
    if draw(st.integers(0, 4)) == 0:
        out["num_classes"] = draw(st.one_of(arrays(), st.integers(-2, 20).map(np.int64)))
    return out


def _check_dataset(ds: Dataset) -> None:
    assert ds.x_test.dim() == 4 and ds.x_test.dtype in (torch.uint8, torch.float32)
    assert len(ds.x_test) == len(ds.y_test) > 0
    for y in (ds.y_train, ds.y_test):
        if y is not None:
            assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    for x in (ds.x_train, ds.x_test):
        if x is not None and x.dtype == torch.float32:
            assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert len(ds.fingerprint) == 64


@many
@given(contents=npz_contents())
def test_npz_loader_returns_a_dataset_or_a_user_error(tmp_path_factory, contents) -> None:
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, **contents)  # object-free: savez pickles only object arrays
    try:
        ds = load_dataset(f"npz:{path}")
    except ArdbenchError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        event(type(exc).__name__)
        return
    event("a valid dataset")
    _check_dataset(ds)


@many
@given(blob=st.binary(max_size=400), zipped=st.booleans())
def test_npz_loader_on_garbage_bytes(tmp_path_factory, blob, zipped) -> None:
    path = tmp_path_factory.mktemp("npz") / "g.npz"
    if zipped:  # a real zip whose members are garbage (npy headers, truncation...)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x_test.npy", b"\x93NUMPY" + blob)
            zf.writestr("y_test.npy", blob)
    else:
        path.write_bytes(blob)
    with pytest.raises(ArdbenchError):
        load_dataset(f"npz:{path}")


# ------------------------------------------------------------------------------ eps parser


@many
@given(k=st.integers(1, 255), tenths=st.integers(0, 9))
def test_eps_255ths_round_trip(k, tenths) -> None:
    eps = Eps(Fraction(10 * k + tenths, 2550))
    text = format_eps(eps)
    assert parse_eps(text) == eps and format_eps(parse_eps(text)) == text
    back = parse_eps(float(eps))  # a float written from k/255 or k/510 snaps back exactly
    assert back == eps if tenths in (0, 5) else float(back) == float(eps)


@many
@given(num=st.integers(0, 10**6), den=st.integers(1, 10**6))
def test_eps_fraction_round_trip(num, den) -> None:
    eps = Eps(Fraction(num, den))
    assert parse_eps(format_eps(eps)) == eps
    assert Eps(str(eps)) == eps and Eps(repr(eps)[5:-2]) == eps


@many
@given(value=st.decimals(min_value=0, max_value=1, allow_nan=False, places=6))
def test_eps_decimal_round_trip(value) -> None:
    eps = parse_eps(str(value))
    assert Fraction(eps) == Fraction(value)
    assert parse_eps(format_eps(eps)) == eps


@many
@given(x=st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10))
def test_eps_float_is_exact_or_snapped(x) -> None:
    eps = parse_eps(x)
    assert math.isclose(float(eps), x, rel_tol=1e-12, abs_tol=1e-15)
    try:
        check_radius("eps", eps)
    except ConfigError as exc:
        assert x <= 0 or x > 1, exc
    else:
        assert 0 < x <= 1 + 1e-12


@many
@given(
    text=st.text(max_size=20).filter(lambda t: not _is_number_text(t.strip()) and "\x00" not in t)
)
def test_eps_garbage_is_a_config_error(text) -> None:
    with pytest.raises(ConfigError, match="expected a number like 8/255"):
        parse_eps(text)


@given(
    value=st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "sNaN",
            "1/0",
            "8//255",
            "8/255/2",
            "",
            "--1",
            "1e999999999",
        ]
    )
)
def test_eps_non_numbers_refused(value) -> None:
    with pytest.raises(ConfigError):
        parse_eps(value)


@given(value=st.one_of(st.booleans(), st.none(), st.lists(st.integers()), st.just(float("nan"))))
def test_eps_non_number_types_refused(value) -> None:
    with pytest.raises(ConfigError):
        parse_eps(value)


def _is_number_text(text: str) -> bool:
    from decimal import Decimal, InvalidOperation

    parts = text.split("/")
    if len(parts) > 2 or not text:
        return False
    try:
        values = [Decimal(p.strip()) for p in parts]
    except (InvalidOperation, ValueError):
        return False
    return all(v.is_finite() for v in values) and (len(values) == 1 or values[1] != 0)
