"""Natural (standard) training: cross-entropy on clean inputs.

No paper; the clean teacher of IAD-II and MTARD. Official code: ZFancy/IAD ``pre_train/ST.py``.
Deviations from the official code: none (the official rule keeps the best test-accuracy
checkpoint; ardbench keeps the last epoch).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodConfig, StepContext, register_method


@register_method("natural")
class Natural(Method[MethodConfig]):
    """L = CE(S(x), y) with the student in train mode (key ``ce_nat``)."""

    paper = "standard training (IAD pre_train/ST.py)"
    needs_teacher = False

    def losses(
        self, student: nn.Module, teacher: nn.Module, batch: Batch, ctx: StepContext
    ) -> dict[str, Tensor]:
        return {"ce_nat": F.cross_entropy(student(batch.x), batch.y)}
