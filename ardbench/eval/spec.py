"""evaluate_spec: resolve a model spec and a dataset spec, evaluate, write the JSON files."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..device import check_device
from ..errors import ConfigError
from ..io import write_json_atomic
from .compliance import ComplianceWarning
from .core import as_spec, evaluate_model, fp32_math
from .crosscheck import robustbench_cross_check
from .modelinfo import dataset_name, model_info
from .result import EvalResult
from .settings import DEFAULT_ATTACKS, EvalSpec

__all__ = ["data_block", "evaluate_spec"]


def evaluate_spec(
    model_spec: str,
    dataset_spec: str,
    spec: EvalSpec | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "auto",
    json_out: str | Path | None = None,
    model_info_out: str | Path | None = None,
    cross_check: str | None = None,
    state_dir: str | Path | None = None,
    model_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
    **settings: Any,
) -> EvalResult:
    """Load ``model_spec`` and the first ``spec.n_examples`` test points of ``dataset_spec``;
    evaluate with ``spec`` (an :class:`EvalSpec`, or its fields as keywords; default: every
    built-in column).

    Writes ``json_out`` (``EvalResult.to_dict()``) and ``model_info_out`` (:func:`model_info`)
    atomically. ``state_dir`` keeps a resumable state file per evaluation
    (``eval-<key>.json``). ``cross_check="robustbench"`` also runs
    :func:`robustbench_cross_check` on the same model and points.
    """
    if spec is None:
        settings.setdefault("attacks", DEFAULT_ATTACKS)
    spec = as_spec(spec, settings)
    if cross_check not in (None, "robustbench"):
        raise ConfigError(f"--cross-check supports only 'robustbench', got {cross_check!r}")
    if model_info_out is not None and "aa" not in spec.attacks:
        raise ConfigError("--model-info needs the AutoAttack column (--attacks ...,aa)")
    dev = check_device(device)
    ds, loaded = _load(model_spec, dataset_spec, data_dir, download, runs_dir, model_dir, dev)
    x, y = ds.test_subset(spec.n_examples, device=dev)
    _check_fits(loaded.module, x, ds.max_label, model_spec)
    state_path = _state_path(state_dir, spec, [loaded.sha256, ds.fingerprint, len(x)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComplianceWarning)  # render_eval shows them
        result = evaluate_model(
            loaded.module,
            x,
            y,
            spec,
            device=dev,
            num_classes=ds.num_classes,
            progress=progress,
            state_path=state_path,
            console=console,
        )
    result.model = {
        "spec": model_spec,
        "arch": loaded.arch,
        "sha256": loaded.sha256,
        "source": loaded.source,
    }
    result.data = data_block(dataset_spec, ds, len(x))
    if state_path is not None:
        result.data["state_path"] = str(state_path)
    if cross_check == "robustbench":
        with fp32_math(dev):  # the same arithmetic as ardbench's own run
            cc = robustbench_cross_check(
                loaded.module, x, y, eps=spec.eps, norm=spec.norm, batch_size=spec.aa_batch_size,
                seed=spec.seed, dataset=_rb_dataset(ds), device=dev,
            )  # fmt: skip
        result.cross_check = _compare(cc, result)
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict())
    if model_info_out is not None:
        info = model_info(
            result,
            dataset=dataset_name(dataset_spec, ds.num_classes),
            architecture=None if loaded.arch == "export" else loaded.arch,
            metadata=metadata,
        )
        write_json_atomic(model_info_out, info, sort_keys=False)  # RobustBench's field order
    return result


def _check_fits(module: Any, x: torch.Tensor, max_label: int, model_spec: str) -> None:
    from ..models.probe import check_model_fits

    check_model_fits(module, x[:2], max_label, f"model {model_spec!r}")


def _load(
    model_spec: str,
    dataset_spec: str,
    data_dir: str | Path | None,
    download: bool,
    runs_dir: str | Path,
    model_dir: str | Path | None,
    dev: torch.device,
) -> tuple[Any, Any]:
    """The dataset and the model (with its sha256, arch and source) on ``dev``."""
    from ..data import load_dataset
    from ..models import load_model

    ds = load_dataset(dataset_spec, data_dir=data_dir, download=download)
    loaded = load_model(
        model_spec,
        num_classes=ds.num_classes,
        dataset=_rb_dataset(ds),
        runs_dir=runs_dir,
        model_dir=model_dir,
        download=download,
        device=dev,
    )
    return ds, loaded


def data_block(dataset_spec: str, ds: Any, n: int) -> dict[str, Any]:
    """The result's ``data``: which dataset and which of its test points were evaluated."""
    return {
        "spec": dataset_spec,
        "fingerprint": ds.fingerprint,
        "test_fingerprint": ds.test_fingerprint,
        "first_n_test_points": n,
    }


def _state_path(state_dir: str | Path | None, spec: EvalSpec, ident: list[Any]) -> Path | None:
    """The state file of this evaluation in ``state_dir``, keyed by the model, the data and
    the settings the per-point results depend on."""
    if state_dir is None:
        return None
    key = [*ident, spec.eps, spec.norm, spec.seed, spec.aa_batch_size, spec.chunk_size]
    blob = json.dumps(key).encode()
    return Path(state_dir) / f"eval-{hashlib.sha256(blob).hexdigest()[:16]}.json"


def _compare(cc: dict[str, Any], result: EvalResult) -> dict[str, Any]:
    """The cross-check beside ardbench's own numbers: the difference and whether they agree
    (to half a point of the evaluated points)."""
    n = result.n_examples
    cc["ardbench_clean"] = result.accuracy["clean"]
    if "aa" in result.accuracy:
        cc["ardbench_aa"] = result.accuracy["aa"]
        cc["aa_difference"] = cc["aa"] - result.accuracy["aa"]
        cc["agree"] = (
            abs(cc["aa_difference"]) < 0.5 / n
            and abs(cc["clean"] - result.accuracy["clean"]) < 0.5 / n
        )
        if result.settings["aa"].get("chunks", 1) > 1:
            cc["note"] = (
                "ardbench ran AutoAttack in chunks; robustbench in one call: the "
                "random inits differ, so small differences are expected"
            )
    return cc


def _rb_dataset(ds: Any) -> str:
    """The RobustBench dataset name for model loading / the cross-check (cifar10 by default)."""
    name = dataset_name(ds.spec, ds.num_classes)
    if name in ("cifar10", "cifar100", "imagenet"):
        return name
    return "cifar100" if ds.num_classes == 100 else "cifar10"
