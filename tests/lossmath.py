"""Independent loss math for the golden tests: plain tensor algebra, written from the official
code's formulas, never from ``ardbench.methods.losses``.

One copy for every golden test module (tests/test_methods_golden_*.py); a test module never
imports another test module.
"""

from __future__ import annotations

import numpy as np
import torch


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - torch.logsumexp(z, dim=1, keepdim=True)


def softmax(z: torch.Tensor) -> torch.Tensor:
    return log_softmax(z).exp()


def ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``z`` against labels ``y``."""
    return -log_softmax(z)[torch.arange(len(y)), y].mean()


def kl_rows(t: torch.Tensor, s: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """KL_i(softmax(t/tau) || softmax(s/tau)) per row."""
    lp, lq = log_softmax(t / tau), log_softmax(s / tau)
    return (lp.exp() * (lp - lq)).sum(1)


def rslad_kl(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """RSLAD's soft-label loss as its official code computes it: the mean over all entries (not
    the batch mean) of p·(log(p + 1e-5) - log q), times 10 on CIFAR-100."""
    p = softmax(t)
    scale = 10.0 if t.shape[1] == 100 else 1.0
    return scale * (-p * log_softmax(s) + torch.log(p + 1e-5) * p).mean()


def close(actual: torch.Tensor, expected: object, rtol: float = 1e-6, atol: float = 1e-12) -> None:
    """``actual`` equals ``expected`` (a number or tensor) to float64 golden tolerance."""
    want = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual.detach(), want, rtol=rtol, atol=atol)


# numpy twins, for goldens computed outside torch altogether (saad, adr)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kl_rows(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """KL_i(softmax(t) || softmax(s)), summed over classes."""
    p, q = np_softmax(t), np_softmax(s)
    return (p * (np.log(p) - np.log(q))).sum(axis=1)
