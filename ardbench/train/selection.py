"""Per-epoch probe and the checkpoint rules beyond "last": best-on-holdout and SWA.

- :class:`Probe`: clean and PGD-10 accuracy of the student, once per epoch, on a fixed slice
  of *training* data: the held-out slice (``train.holdout``) when there is one, else the first
  ``train.probe`` training images, unaugmented. It never looks at the test set. Its PGD draws
  its random start from its own seeded generator, so the training steps' random numbers (and
  hence the run) are the same with or without it. It feeds the epoch line, the log (plots)
  and the best-on-holdout rule.
- :class:`BestOnHoldout`: keeps the weights of the epoch with the best probe PGD-10 accuracy
  on the held-out slice (ties: the later epoch), the papers' "best checkpoint" habit done
  honestly.
- :class:`SWA`: ``torch.optim.swa_utils.AveragedModel`` of the end-of-epoch students from
  epoch ``swa_start`` on (parameters averaged, as PeerAiD's SWA), BatchNorm statistics
  recomputed once at the end over one augmented pass of the training set with
  ``update_bn`` (PeerAiD recomputes them after every averaging step; only the last pass
  reaches the final model).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, update_bn

from ..attacks import ce_objective, pgd
from ..protocols import AttackConfig

PROBE_STEPS = 10


class Probe:
    def __init__(self, x: Tensor, y: Tensor, attack: AttackConfig, seed: int, split: str) -> None:
        self.x, self.y = x, y
        self.eps = float(attack.eps)
        self.norm = attack.norm
        self.seed = seed
        self.split = split

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """{"clean", "pgd10": accuracy fractions, "examples", "split"} (one host read)."""
        was_training = model.training
        model.eval()
        try:
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            delta0 = (2 * torch.rand(self.x.shape, generator=g) - 1) * self.eps
            with torch.no_grad():
                clean = model(self.x).argmax(1) == self.y
            x_adv = pgd(
                self.x,
                ce_objective(model, self.y, reduction="sum"),
                eps=self.eps,
                step=self.eps / 4,
                steps=PROBE_STEPS,
                clamp_start=True,
                norm=self.norm,
                delta0=delta0.to(self.x.device, self.x.dtype),
            )
            with torch.no_grad():
                robust = (model(x_adv).argmax(1) == self.y) & clean
            counts = torch.stack([clean.sum(), robust.sum()]).cpu().numpy().tolist()
        finally:
            model.train(was_training)
        n = len(self.y)
        return {"clean": counts[0] / n, "pgd10": counts[1] / n, "examples": n, "split": self.split}


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy without torch.compile's wrapper (an eager module of the same weights)."""
    saved = model.__dict__.get("_compiled_call_impl")
    model.__dict__["_compiled_call_impl"] = None
    try:
        return copy.deepcopy(model)
    finally:
        model.__dict__["_compiled_call_impl"] = saved


class BestOnHoldout:
    def __init__(self) -> None:
        self.best: dict[str, Any] | None = None  # {"epoch", "pgd10", "clean", "state"}

    def observe(self, epoch: int, probe: dict[str, Any], student: nn.Module) -> None:
        if self.best is None or probe["pgd10"] >= self.best["pgd10"]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}
            self.best = {
                "epoch": epoch + 1,
                "pgd10": probe["pgd10"],
                "clean": probe["clean"],
                "state": state,
            }

    def state_dict(self) -> dict[str, Any] | None:
        return self.best

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.best = state


class SWA:
    def __init__(self, student: nn.Module, start: int) -> None:
        self.start = start
        self.averaged = AveragedModel(plain_copy(student), use_buffers=False)

    def after_epoch(self, epoch: int, student: nn.Module) -> None:
        if epoch >= self.start:
            self.averaged.update_parameters(student)

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)

    def finalize(self, batches: Iterable[Tensor]) -> nn.Module:
        """The averaged network with BatchNorm statistics recomputed over ``batches``."""
        model = self.averaged.module
        with torch.no_grad():
            update_bn(batches, model)
        return model.eval()
