"""The teacher sanity check: is the teacher right on the inputs the students actually see?

A distilled student learns only what its teacher says about the training inputs *as the
loader hands them out*. A teacher fed inputs it was not trained on (a crop border it never
saw, un-normalised pixels, another dataset's statistics) is a known silent failure of
published ARD code: the ResNet-4B teacher of the small track is 82 % right on its training
images but 63 % on them after a zero-padded crop. So before training, every run with a
teacher measures, in eval mode and fp32, on up to :data:`CHECK_POINTS` points:

- ``augmented``: the first training inputs of epoch 0 exactly as the loader builds them (the
  protocol's crop and flip, the run's seed);
- ``unaugmented``: the same images without augmentation;
- ``test``: the first test points.

It warns (``train.teacher_check: strict``: refuses to start) when the augmented figure is
more than :data:`MAX_AUGMENT_DROP` points under the unaugmented one, or any figure is near
chance (under twice the chance rate). The figures go into the record (``teacher.check``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..data.loader import DeviceLoader, to_float01

CHECK_POINTS = 2048
MAX_AUGMENT_DROP = 10.0  # percentage points
BATCH = 256


@dataclass(frozen=True)
class TeacherCheck:
    """Accuracies in percent (None where there was nothing to measure) and what they mean."""

    name: str
    augmentation: str
    n_train: int
    augmented: float
    unaugmented: float
    n_test: int
    test: float | None
    chance: float
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("name")
        return out

    def summary(self) -> str:
        test = f", {self.test:.1f} % on {self.n_test} test points" if self.test is not None else ""
        return (
            f"{self.name} check: {self.unaugmented:.1f} % right on {self.n_train} training "
            f"images, {self.augmented:.1f} % on them as the students see them "
            f"({self.augmentation}){test}"
        )


def describe_augmentation(augment: bool, crop: str, flip: bool) -> str:
    if not augment or (crop == "none" and not flip):
        return "no augmentation"
    parts = []
    if crop != "none":
        parts.append(f"{crop}-padded random crop")
    if flip:
        parts.append("flip")
    return " + ".join(parts)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy in percent, eval mode, fp32, batches of :data:`BATCH` (mode restored)."""
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros((), dtype=torch.int64, device=y.device)
        for start in range(0, len(y), BATCH):
            logits = model(to_float01(x[start : start + BATCH]))
            correct += (logits.argmax(1) == y[start : start + BATCH]).sum()
    finally:
        model.train(was_training)
    return 100.0 * int(correct) / max(len(y), 1)  # one host read, outside any training step


def check_teacher(
    model: nn.Module,
    loader: DeviceLoader,
    x_test: Tensor | None,
    y_test: Tensor | None,
    *,
    num_classes: int,
    name: str = "teacher",
    n: int = CHECK_POINTS,
) -> TeacherCheck:
    """Measure ``model`` on the first ``n`` inputs of the loader's epoch 0 (augmented as the
    students get them, and plain) and on the first ``n`` test points."""
    x_aug, x_plain, y = loader.epoch_head(0, n)
    augmented = accuracy(model, x_aug, y)
    unaugmented = accuracy(model, x_plain, y)
    test, n_test = None, 0
    if x_test is not None and y_test is not None and len(y_test):
        n_test = min(n, len(y_test))
        dev = loader.device
        test = accuracy(model, x_test[:n_test].to(dev), y_test[:n_test].to(dev))
    chance = 100.0 / num_classes
    warnings = []
    if unaugmented - augmented > MAX_AUGMENT_DROP:
        warnings.append(
            f"the {name} is {unaugmented - augmented:.1f} points less accurate on the inputs "
            f"as the students see them ({augmented:.1f} %) than unaugmented "
            f"({unaugmented:.1f} %): it was not trained on this augmentation; choose one it "
            "tolerates (train.crop=reflect|none, train.flip=false, train.augment=false)"
        )
    figures = {"augmented": augmented, "unaugmented": unaugmented, "test": test}
    low = [k for k, v in figures.items() if v is not None and v < 2 * chance]
    if low:
        warnings.append(
            f"the {name} is near chance ({chance:.1f} %) on "
            + ", ".join(f"{k} inputs ({figures[k]:.1f} %)" for k in low)
            + ": a wrong model, wrong labels, or inputs it does not expect (normalisation?)"
        )
    return TeacherCheck(
        name=name,
        augmentation=describe_augmentation(loader.augment, loader.crop, loader.flip),
        n_train=len(y),
        augmented=round(augmented, 2),
        unaugmented=round(unaugmented, 2),
        n_test=n_test,
        test=None if test is None else round(test, 2),
        chance=round(chance, 2),
        warnings=warnings,
    )
