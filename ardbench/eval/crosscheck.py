"""An independent driver for the same AutoAttack: ``robustbench.eval.benchmark()`` on our points."""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .autoattack import AALog
from .result import dist_version

__all__ = ["robustbench_cross_check"]


def robustbench_cross_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "Linf",
    batch_size: int = 256,
    seed: int = 0,
    dataset: str = "cifar10",
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run ``robustbench.eval.benchmark()`` (robustbench 1.1.1) on the same model and points.

    What is cross-checked: robustbench's own evaluation driver — its eval-mode warning, its
    ``clean_accuracy``, its construction of AutoAttack ``standard`` and its recomputation of the
    robust accuracy from the returned adversarial points — against ardbench's driver (our per-
    point flags, chunking, breakdown). The attack code is the same (pyautoattack), so with one
    chunk, the same seed and batch size the two numbers must agree exactly.

    Two substitutions make it run offline with pyautoattack 0.2.0, both undone afterwards:
    ``robustbench.eval.AutoAttack`` becomes an adapter from the pre-0.2 API robustbench calls
    (``AutoAttack(model, norm=, eps=, version=, device=, log_path=)``,
    ``run_standard_evaluation(x, y, bs=)`` returning x_adv) to pyautoattack's keyword-only API,
    seeded with ``seed`` (robustbench passes none, which makes AutoAttack seed from the clock);
    and ``robustbench.eval.load_clean_dataset`` returns ``(x, y)`` instead of reading its own
    torchvision copy of the dataset (``dataset`` then only picks robustbench's preprocessing,
    ``ToTensor`` for CIFAR, which the substitute bypasses).
    """
    from .._compat import import_autoattack, import_robustbench

    aa_pkg = import_autoattack()
    import_robustbench()
    import robustbench.eval as rb_eval

    x_cpu = x.detach().to("cpu", torch.float32).contiguous()
    y_cpu = y.detach().to("cpu", torch.int64)
    dev = torch.device(device) if device is not None else x.device
    capture = AALog()
    stdout = io.StringIO()
    t0 = time.perf_counter()
    with (
        _substitutes(rb_eval, aa_pkg, seed, x_cpu, y_cpu),
        warnings.catch_warnings(record=True) as caught,
        capture.attached(),
        contextlib.redirect_stdout(stdout),
    ):
        warnings.simplefilter("always")
        clean, robust = rb_eval.benchmark(
            model,
            n_examples=len(x_cpu),
            dataset=dataset,
            threat_model=norm,
            device=dev,
            batch_size=batch_size,
            eps=eps,
        )
    return {
        "tool": "robustbench.eval.benchmark",
        "robustbench_version": dist_version("robustbench"),
        "clean": float(clean),
        "aa": float(robust),
        "seconds": time.perf_counter() - t0,
        "seed": seed,
        "batch_size": batch_size,
        "warnings": [str(w.message) for w in caught] + list(dict.fromkeys(capture.warnings)),
        "stdout": stdout.getvalue().strip().splitlines(),
        "what": "robustbench 1.1.1 benchmark() driver on the same model and points, "
        "AutoAttack standard via an adapter to pyautoattack 0.2.0, same seed",
    }


@contextlib.contextmanager
def _substitutes(
    rb_eval: Any, aa_pkg: Any, seed: int, x_cpu: Tensor, y_cpu: Tensor
) -> Iterator[None]:
    """robustbench's ``AutoAttack`` and ``load_clean_dataset`` replaced (see
    :func:`robustbench_cross_check`), restored afterwards."""

    def load_clean_dataset(
        dataset: Any, n_examples: int | None, data_dir: Any, prepr: Any
    ) -> tuple[Tensor, Tensor]:
        return x_cpu[:n_examples], y_cpu[:n_examples]

    saved = (rb_eval.AutoAttack, rb_eval.load_clean_dataset)
    rb_eval.AutoAttack = _pre_v02_autoattack(aa_pkg, seed)
    rb_eval.load_clean_dataset = load_clean_dataset
    try:
        yield
    finally:
        rb_eval.AutoAttack, rb_eval.load_clean_dataset = saved


def _pre_v02_autoattack(aa_pkg: Any, seed: int) -> type:
    """robustbench's ``AutoAttack`` (the pre-0.2 API it calls) over pyautoattack's keyword-only
    API, seeded with ``seed``."""

    class _PreV02AutoAttack:
        def __init__(
            self,
            model: nn.Module,
            norm: str = "Linf",
            eps: float = 0.3,
            version: str = "standard",
            device: Any = "cpu",
            log_path: Any = None,
            **_: Any,
        ) -> None:
            self._aa = aa_pkg.AutoAttack(
                model, norm=norm, eps=eps, version=version, device=device, seed=seed
            )

        def run_standard_evaluation(
            self,
            x_orig: Tensor,
            y_orig: Tensor,
            bs: int = 250,
            state_path: Any = None,
            return_labels: bool = False,
        ) -> Any:
            x_adv, y_adv = self._aa.run_standard_evaluation(
                x_orig.contiguous(), y_orig, batch_size=bs, state_path=state_path
            )
            return (x_adv, y_adv) if return_labels else x_adv

    return _PreV02AutoAttack
