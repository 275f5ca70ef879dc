"""Loss building blocks shared by methods, written literally as the official codes compute them.

KL(P || Q) with P the *target* (first argument, as in the reference's notation). The three
reductions of ``kl_reduction`` differ in scale and are not interchangeable (reference §1.2).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLReduction = Literal["batchmean", "mean_all", "rslad"]
"""A ``kl_reduction`` config key's choices."""
KL_REDUCTIONS: tuple[str, ...] = typing.get_args(KLReduction)


def kl_per_sample(target_logits: Tensor, student_logits: Tensor, tau: float = 1.0) -> Tensor:
    """KL_i(softmax(T/tau) || softmax(S/tau)) for each row, shape (B,)."""
    log_q = F.log_softmax(student_logits / tau, dim=1)
    log_p = F.log_softmax(target_logits / tau, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_div(
    target_logits: Tensor, student_logits: Tensor, reduction: str, tau: float = 1.0
) -> Tensor:
    """Batch KL(softmax(T/tau) || softmax(S/tau)) with one of the literal reductions.

    - ``batchmean``: sum over classes, mean over the batch (``F.kl_div(..., 'batchmean')``).
    - ``mean_all``: mean over batch *and* classes (``nn.KLDivLoss()`` default) = batchmean / C.
    - ``rslad``: RSLAD's ``-P log Q + P log(P + 1e-5)`` meaned over all entries, times 10 when
      C = 100 (their CIFAR-100 scripts).
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    log_q = F.log_softmax(student_logits / tau, dim=1)
    if reduction == "rslad":
        p = F.softmax(target_logits / tau, dim=1)
        scale = 10.0 if target_logits.shape[1] == 100 else 1.0
        return scale * torch.mean(-p * log_q + torch.log(p + 1e-5) * p)
    p_log = F.log_softmax(target_logits / tau, dim=1)
    pointwise = F.kl_div(log_q, p_log, reduction="none", log_target=True)
    if reduction == "batchmean":
        return pointwise.sum() / student_logits.shape[0]
    return pointwise.mean()


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype = torch.long) -> Tensor:
    """``F.one_hot(y, num_classes).to(dtype)`` without its host read: torch checks the labels'
    range on the host (a sync that breaks CUDA-graph capture and the step's no-read rule);
    labels are checked once when the data is loaded."""
    classes = torch.arange(num_classes, device=y.device)
    return (y.unsqueeze(-1) == classes).to(dtype)
