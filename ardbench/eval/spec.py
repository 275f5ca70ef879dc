"""evaluate_spec: resolve a model spec and a dataset spec, evaluate, write the JSON files."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..device import check_device
from ..errors import ConfigError
from ..io import write_json_atomic
from ..protocols import Eps
from ..protocols.eps import parse_number
from ..protocols.sections import check_radius
from .columns import parse_attacks
from .compliance import ComplianceWarning
from .core import DEFAULT_AA_BATCH_SIZE, evaluate_model, fp32_math
from .crosscheck import robustbench_cross_check
from .modelinfo import dataset_name, model_info
from .result import EvalResult

__all__ = ["evaluate_spec"]


def evaluate_spec(
    model_spec: str,
    dataset_spec: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    n_examples: int | None = None,
    attacks: str | Sequence[str] = ("clean", "fgsm", "pgd20", "cw", "aa"),
    eps: float | str = 8 / 255,
    norm: str = "Linf",
    batch_size: int | str = "auto",
    aa_batch_size: int = DEFAULT_AA_BATCH_SIZE,
    seed: int = 0,
    device: str | torch.device = "auto",
    json_out: str | Path | None = None,
    model_info_out: str | Path | None = None,
    compliant: bool = False,
    cross_check: str | None = None,
    state_dir: str | Path | None = None,
    chunk_size: int | None = None,
    model_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    console: Any = None,
) -> EvalResult:
    """Load ``model_spec`` and the first ``n_examples`` test points of ``dataset_spec``; evaluate.

    Writes ``json_out`` (``EvalResult.to_dict()``) and ``model_info_out`` (:func:`model_info`)
    atomically. ``state_dir`` keeps a resumable state file per evaluation
    (``eval-<key>.json``). ``cross_check="robustbench"`` also runs
    :func:`robustbench_cross_check` on the same model and points.
    """
    from ..data import load_dataset
    from ..models import load_model
    from ..models.probe import check_model_fits

    if cross_check not in (None, "robustbench"):
        raise ConfigError(f"--cross-check supports only 'robustbench', got {cross_check!r}")
    eps = parse_number(eps)
    check_radius("eps", Eps(eps))
    columns = parse_attacks(attacks)
    if model_info_out is not None and "aa" not in columns:
        raise ConfigError("--model-info needs the AutoAttack column (--attacks ...,aa)")
    dev = check_device(device)
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
    x, y = ds.test_subset(n_examples, device=dev)
    check_model_fits(loaded.module, x[:2], ds.max_label, f"model {model_spec!r}")
    state_path = None
    if state_dir is not None:
        blob = json.dumps(
            [loaded.sha256, ds.fingerprint, len(x), eps, norm, seed, aa_batch_size, chunk_size]
        ).encode()
        state_path = Path(state_dir) / f"eval-{hashlib.sha256(blob).hexdigest()[:16]}.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ComplianceWarning)  # render_eval shows them
        result = evaluate_model(
            loaded.module,
            x,
            y,
            attacks=columns,
            eps=eps,
            norm=norm,
            batch_size=batch_size,
            aa_batch_size=aa_batch_size,
            seed=seed,
            device=dev,
            num_classes=ds.num_classes,
            progress=progress,
            state_path=state_path,
            chunk_size=chunk_size,
            compliant=compliant,
            console=console,
        )
    result.model = {
        "spec": model_spec,
        "arch": loaded.arch,
        "sha256": loaded.sha256,
        "source": loaded.source,
    }
    result.data = {
        "spec": dataset_spec,
        "fingerprint": ds.fingerprint,
        "test_fingerprint": ds.test_fingerprint,
        "first_n_test_points": len(x),
    }
    if state_path is not None:
        result.data["state_path"] = str(state_path)
    if cross_check == "robustbench":
        with fp32_math(dev):  # the same arithmetic as ardbench's own run
            cc = robustbench_cross_check(
                loaded.module,
                x,
                y,
                eps=eps,
                norm=norm,
                batch_size=aa_batch_size,
                seed=seed,
                dataset=_rb_dataset(ds),
                device=dev,
            )
        cc["ardbench_clean"] = result.accuracy["clean"]
        if "aa" in result.accuracy:
            cc["ardbench_aa"] = result.accuracy["aa"]
            cc["aa_difference"] = cc["aa"] - result.accuracy["aa"]
            cc["agree"] = abs(cc["aa_difference"]) < 0.5 / len(x) and abs(
                cc["clean"] - result.accuracy["clean"]
            ) < 0.5 / len(x)
            if result.settings["aa"].get("chunks", 1) > 1:
                cc["note"] = (
                    "ardbench ran AutoAttack in chunks; robustbench in one call: the "
                    "random inits differ, so small differences are expected"
                )
        result.cross_check = cc
    if json_out is not None:
        write_json_atomic(json_out, result.to_dict())
    if model_info_out is not None:
        write_json_atomic(
            model_info_out,
            model_info(
                result,
                dataset=dataset_name(dataset_spec, ds.num_classes),
                architecture=None if loaded.arch == "export" else loaded.arch,
                metadata=metadata,
            ),
            sort_keys=False,  # RobustBench's model_info field order
        )
    return result


def _rb_dataset(ds: Any) -> str:
    """The RobustBench dataset name for model loading / the cross-check (cifar10 by default)."""
    name = dataset_name(ds.spec, ds.num_classes)
    if name in ("cifar10", "cifar100", "imagenet"):
        return name
    return "cifar100" if ds.num_classes == 100 else "cifar10"
