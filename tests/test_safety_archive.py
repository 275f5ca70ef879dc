"""``.pt2`` archives crafted so that the checker and torch's C++ zip reader see names apart.

torch's reader (``PyTorchStreamReader``, miniz) ignores ASCII case, ends a name at a NUL and
does not normalise paths; Python's ``zipfile`` does none of that. Each archive here is built
the way an attacker would build it: a pickle whose ``__reduce__`` writes a marker file, reached
through a name the old checker resolved to another member. The live cases first show that
torch, unchecked, does run the payload (so the tests below can fail); then that ``eval``,
``check-teacher`` and :func:`load_model` refuse the archive with one line and never run it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import hostile_files as hf
import pytest
import torch

from ardbench.cli import main
from ardbench.models import archive
from ardbench.models.archive import UnsafeModelError, checked_archive

Builder = Callable[[Path, Path, Path], Path]  # (good archive, dest, marker) -> dest


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return hf.export_small_cnn(tmp_path_factory.mktemp("pt2") / "ok.pt2")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return hf.npz(
        root / "d.npz",
        x_train=hf.images(8),
        y_train=hf.labels(8),
        x_test=hf.images(4, seed=1),
        y_test=hf.labels(4, seed=1),
    )


def _padded_pickle(marker: Path) -> bytes:
    """A code-running pickle torch also accepts as raw float32 bytes (size a multiple of 8)."""
    blob = hf.evil_pickle(marker)
    return blob + b"\0" * (-len(blob) % 8)


def _aliased_weight(path_name: str) -> Builder:
    """weight_0 holds the payload and stays declared raw; a first config entry names it
    pickled through ``path_name``, a name torch's reader resolves to weight_0."""

    def build(src: Path, dest: Path, marker: Path) -> Path:
        def edit(config: dict) -> None:
            evil = {"path_name": path_name, "is_param": False, "use_pickle": True}
            config["config"] = {"evil": {**evil, "tensor_meta": None}, **config["config"]}

        hf.with_config(src, dest, "weights", edit)
        return hf.with_member(dest, dest, "data/weights/weight_0", _padded_pickle(marker))

    return build


def _case_twin(src: Path, dest: Path, marker: Path) -> Path:
    """Two members equal but for case: the checker reads the benign one for one name."""
    files = hf.members(src)
    root = next(iter(files)).split("/")[0]
    return hf.write_zip(dest, [*files.items(), (f"{root}/data/weights/WEIGHT_0", b"x" * 8)])


def _raw_name_bytes(src: Path, dest: Path, placeholder: str, raw: bytes) -> Path:
    """Rewrite a member name byte for byte (local header and central directory), as a zip
    editor would: Python's zipfile would refuse to write it."""
    files = hf.members(src)
    root = next(iter(files)).split("/")[0]
    hf.write_zip(dest, {**files, f"{root}/{placeholder}": b"{}"})
    blob = dest.read_bytes()
    encoded = f"{root}/{placeholder}".encode()
    assert len(raw) == len(encoded) - len(root) - 1
    dest.write_bytes(blob.replace(encoded, f"{root}/".encode() + raw))
    return dest


LIVE: dict[str, tuple[str, Builder]] = {
    "case-folded-path-name": (r"weight_0.*posix\.system", _aliased_weight("WEIGHT_0")),
    "nul-ended-path-name": (r"not a plain file name", _aliased_weight("weight_0\x00x")),
}
REFUSED: dict[str, tuple[str, Builder]] = {
    **LIVE,
    "case-twin-members": (r"WEIGHT_0.*appears more than once.*ignores case", _case_twin),
    "dotdot-path-name": (r"not a plain file name", _aliased_weight("../weights/weight_0")),
    "slash-path-name": (r"not a plain file name", _aliased_weight("sub/weight_0")),
    "backslash-member": (
        r"not a plain name",
        lambda s, d, m: hf.write_zip(d, {**hf.members(s), "ok/data\\weights\\x": b"1"}),
    ),
    "dot-segment-member": (
        r"not a plain name",
        lambda s, d, m: hf.write_zip(d, {**hf.members(s), "ok/data/./weights/x": b"1"}),
    ),
    "non-ascii-member": (
        r"not a plain name",
        lambda s, d, m: hf.write_zip(d, {**hf.members(s), "ok/extra/caf\u00e9": b"1"}),
    ),
    "nul-in-member-name": (
        r"not a plain name",
        lambda s, d, m: _raw_name_bytes(s, d, "extra/abcd", b"extr\x00/abcd"),
    ),
    "long-member-name": (
        r"not a plain name",
        lambda s, d, m: hf.write_zip(d, {**hf.members(s), "ok/" + "x" * 600: b"1"}),
    ),
    "member-outside-root": (
        r"outside the archive's folder",
        lambda s, d, m: hf.write_zip(d, {**hf.members(s), "other/data/weights/weight_0": b"1"}),
    ),
}


def _one_error_line(err: str, expect: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ardbench: error:"), err
    assert "Traceback" not in err and re.search(expect, lines[0]), lines[0]


@pytest.mark.parametrize("name", list(LIVE))
def test_payload_runs_when_torch_loads_it_unchecked(name, good, tmp_path) -> None:
    """Without the check, torch's reader resolves the alias to weight_0 and unpickles it."""
    marker = tmp_path / "MARKER"
    path = LIVE[name][1](good, tmp_path / "hostile.pt2", marker)
    with archive.quiet_torch_export(), pytest.raises(RuntimeError):
        torch.export.load(io.BytesIO(path.read_bytes()))
    assert marker.exists()


@pytest.mark.parametrize("name", list(REFUSED))
def test_checker_refuses(name, good, tmp_path) -> None:
    expect, build = REFUSED[name]
    marker = tmp_path / "MARKER"
    path = build(good, tmp_path / "hostile.pt2", marker)
    with pytest.raises(UnsafeModelError, match=expect):
        checked_archive(str(path), path.read_bytes())
    assert not marker.exists()


@pytest.mark.parametrize(
    "name", ["case-folded-path-name", "nul-ended-path-name", "case-twin-members"]
)
@pytest.mark.parametrize("entry", ["eval", "check-teacher", "load_model"])
def test_entry_points_never_run_it(name, entry, good, data, tmp_path, capsys) -> None:
    from ardbench.models import load_model

    expect, build = REFUSED[name]
    marker = tmp_path / "MARKER"
    path = str(build(good, tmp_path / "hostile.pt2", marker))
    common = ["--dataset", f"npz:{data}", "--device", "cpu"]
    if entry == "load_model":
        with pytest.raises(UnsafeModelError, match=expect):
            load_model(path)
    elif entry == "eval":
        argv = ["eval", path, *common, "--n-examples", "2", "--attacks", "clean", "--quiet"]
        assert main([*argv, "--runs", str(tmp_path / "runs")]) == 2
        _one_error_line(capsys.readouterr().err, expect)
    else:
        assert main(["check-teacher", path, *common, "-n", "4"]) == 2
        _one_error_line(capsys.readouterr().err, expect)
    assert not marker.exists()


def test_second_model_config_naming_a_weight_pickled(good, tmp_path) -> None:
    """Every config torch reads counts: another model's config naming weight_0 pickled makes
    weight_0 a member to check, whatever the first config says."""
    files = hf.members(good)
    root = next(iter(files)).split("/")[0]
    weights = json.loads(files[f"{root}/data/weights/model_weights_config.json"])
    for meta in weights["config"].values():
        meta["use_pickle"] = True
    files[f"{root}/models/twin.json"] = files[f"{root}/models/model.json"]
    files[f"{root}/data/weights/twin_weights_config.json"] = json.dumps(weights).encode()
    files[f"{root}/data/weights/weight_0"] = hf.evil_pickle(tmp_path / "MARKER")
    path = hf.write_zip(tmp_path / "twin.pt2", files)
    with pytest.raises(UnsafeModelError, match=r"weight_0.*posix\.system"):
        checked_archive(str(path), path.read_bytes())


def test_a_decoy_config_grants_nothing(good, tmp_path) -> None:
    """A config torch never reads (no models/<name>.json) cannot make a member raw."""
    pickled = _aliased_weight("weight_0")(good, tmp_path / "p.pt2", tmp_path / "MARKER")
    files = hf.members(pickled)
    root = next(iter(files)).split("/")[0]
    decoy = {"config": {"w": {"path_name": "weight_0", "use_pickle": False, "is_param": True}}}
    files[f"{root}/data/weights/decoy_weights_config.json"] = json.dumps(decoy).encode()
    path = hf.write_zip(tmp_path / "decoy.pt2", files)
    with pytest.raises(UnsafeModelError, match=r"weight_0.*posix\.system"):
        checked_archive(str(path), path.read_bytes())


def test_a_plain_export_still_loads_the_same(good) -> None:
    from ardbench.models import load_model

    blob = checked_archive(str(good), good.read_bytes())
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert zf.namelist() == list(hf.members(good))
    x = torch.rand(3, 3, 32, 32)
    with archive.quiet_torch_export():
        reference = torch.export.load(str(good)).module()
    assert torch.allclose(load_model(str(good)).module(x), reference(x))
