"""Builders of hostile and malformed files for tests/test_safety_hostile_inputs.py.

Every payload that would run code writes a marker file (``touch MARKER``), so a test can
assert that nothing ran. ``tests/test_safety_hostile_inputs.py::test_payloads_are_live`` shows that
the main payloads do run code when torch loads them unchecked.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ardbench.models import build_arch


class Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(Evil(marker), protocol=protocol)


def evil_pickle_text(marker: Path) -> bytes:
    """The same in pickle protocol 0 (text: no leading \\x80)."""
    return f"cposix\nsystem\n(S'touch {marker}'\ntR.".encode()


def evil_torch_save(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"x": Evil(marker)}, buf)
    return buf.getvalue()


def evil_legacy_stream(marker: Path) -> bytes:
    """torch's legacy format is several pickles in a row: the code is in the fourth."""
    magic = 0x1950A86A20F9469CFC6C
    parts = [magic, 1001, {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(p, protocol=2) for p in parts) + evil_pickle(marker, 2)


# ------------------------------------------------------------------------------ archives


def export_small_cnn(path: Path, *, num_classes: int = 10, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    model = build_arch("small_cnn", num_classes=num_classes).eval()
    x = torch.rand(2 if dynamic else 1, 3, 32, 32)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), path)
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_zip(path: Path, files: dict[str, bytes] | list[tuple[str, bytes]]) -> Path:
    items = files.items() if isinstance(files, dict) else files
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are one of the hostile archives
        for name, data in items:
            zf.writestr(name, data)
    return path


def _find(files: dict[str, bytes], suffix: str) -> str:
    return next(n for n in files if n.endswith(suffix))


def with_member(src: Path, dest: Path, suffix: str, data: bytes) -> Path:
    """A copy of archive ``src`` whose member ending in ``suffix`` holds ``data``."""
    files = members(src)
    files[_find(files, suffix)] = data
    return write_zip(dest, files)


def with_graph(src: Path, dest: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    files = members(src)
    name = _find(files, "models/model.json")
    graph = json.loads(files[name])
    edit(graph)
    files[name] = json.dumps(graph).encode()
    return write_zip(dest, files)


def with_config(src: Path, dest: Path, kind: str, edit: Callable[[dict], None]) -> Path:
    """Edit ``data/<kind>/model_<kind>_config.json`` (kind: weights or constants)."""
    files = members(src)
    name = _find(files, f"data/{kind}/model_{kind}_config.json")
    config = json.loads(files[name])
    edit(config)
    files[name] = json.dumps(config).encode()
    return write_zip(dest, files)


def pickled_weight(src: Path, dest: Path, payload: bytes) -> Path:
    """weight_0 declared as a pickle (torch then torch.load()s it, weights_only=False)."""

    def edit(config: dict) -> None:
        for meta in config["config"].values():
            if meta["path_name"] == "weight_0":
                meta["use_pickle"] = True

    with_config(src, dest, "weights", edit)
    return with_member(dest, dest, "data/weights/weight_0", payload)


def object_constant(src: Path, dest: Path, prefix: str, payload: bytes) -> Path:
    """A constant stored as a Python object (opaque_obj_: pickle.loads; custom_obj_: TorchScript)."""
    name = f"{prefix}0"

    def edit(config: dict) -> None:
        config["config"]["evil"] = {"path_name": name, "is_param": False, "use_pickle": True}

    with_config(src, dest, "constants", edit)
    files = members(dest)
    root = next(iter(files)).split("/")[0]
    files[f"{root}/data/constants/{name}"] = payload
    return write_zip(dest, files)


def sympy_payload(marker: Path) -> Callable[[dict], None]:
    def edit(graph: dict) -> None:
        for value in graph["graph_module"]["graph"]["tensor_values"].values():
            for size in value["sizes"]:
                if "as_expr" in size:
                    size["as_expr"]["expr_str"] = f"__import__('os').system('touch {marker}')"

    return edit


def guard_payload(marker: Path) -> Callable[[dict], None]:
    def edit(graph: dict) -> None:
        graph["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    return edit


def target_payload(graph: dict) -> None:
    for node in graph["graph_module"]["graph"]["nodes"]:
        if node["target"].startswith("torch.ops.aten.relu"):
            node["target"] = "torch.serialization.os.system"
            return


# ---------------------------------------------------------------------------- data files


def npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def images(n: int, *, seed: int = 0, shape: tuple[int, ...] = (32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def labels(n: int, *, seed: int = 0, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def safetensors_file(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, path)
    return path


def torch_file(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path
