"""Does a loaded model fit the data? One forward on two images, before any work starts.

A model that cannot take the data's images (wrong channels or size, an archive exported with a
fixed batch), that does not return ``(N, classes)`` logits, or that has no logit for some
label of the data (labels up to 998 for a 10-class network) fails here with one line, instead
of inside an attack or after a run directory exists.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ArdbenchError, first_line

__all__ = ["ModelFitError", "check_model_fits"]


class ModelFitError(ArdbenchError, ValueError):
    """A model that does not fit the data it is given; names the model and the mismatch."""


def check_model_fits(module: nn.Module, images: Tensor, max_label: int, what: str) -> None:
    """``images``: float [0,1] NCHW on the model's device (two are used; one is repeated);
    ``max_label``: the largest label the model will be scored on (it needs a logit for it).

    The train/eval flags of every submodule are restored and no random number is drawn, so
    a check before training changes nothing the run computes.
    """
    x = images[:2]
    if len(x) == 1:
        x = torch.cat([x, x])
    flags = [(m, m.training) for m in module.modules()]
    for m, _ in flags:
        m.training = False  # batch statistics untouched (works on exported graphs too)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as exc:
        raise ModelFitError(
            f"{what} does not run on the data's images (a batch of 2 of shape "
            f"{tuple(x.shape[1:])}): {first_line(exc)}",
            hint="check that the model and the dataset match (channels, image size; an "
            "exported model needs a dynamic batch)",
        ) from None
    finally:
        for m, training in flags:
            m.training = training
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelFitError(
            f"{what} returns {shape} for 2 images, not logits of shape (2, classes)",
            hint="the model must return one row of class scores per image",
        )
    if out.shape[1] <= max_label:
        raise ModelFitError(
            f"{what} outputs {out.shape[1]} logits, but the data has labels up to {max_label}",
            hint="use the model made for this dataset, or check the labels",
        )
