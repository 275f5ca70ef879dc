"""Reference training steps: the official scripts' *way of computing*, emulated for timing.

Each ``*_reference`` factory returns ``step(x_cpu, y_cpu)``, one training step as the official
script performs it on a batch straight from its host-side data loader (``HostAugLoader``:
torchvision ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor`` per PIL
image in DataLoader workers, collated on the host, copied to the device in the step). Written
for ardbench from a reading of the pinned official code (the file and lines each step follows
are named in its docstring); no code is copied. What is emulated is what costs time:

- the attack as coded: ``torch.autograd.grad`` w.r.t. the input where the official code does
  that (RSLAD, ARD, TRADES), ``loss.backward()`` with weight gradients where it does that
  (IAD's ``attack_generator.PGD``, used by ``pre_train/AT.py``), random starts drawn on the
  host and copied where the code does that (``torch.randn(shape).cuda()``,
  ``np.random.uniform``), per-sample Python loops with a device sync per sample (IAD's Kappa);
- every forward the code runs (TRADES' clean forward inside every attack step, ARD's
  zero-weight ``basic_net(inputs)``), the loss reductions as coded, host syncs (``loss.item()``);
- the cuDNN flags the script sets (``deterministic`` for RSLAD and IAD, ``benchmark`` for ARD
  and IAD), ``nn.DataParallel`` where the script wraps the model (on CUDA only: on a CPU
  machine DataParallel is a pass-through);
- eager mode, fp32 (cuDNN's default TF32 convolutions apply to both sides of the comparison).

Not emulated: printing, tqdm, checkpoint writing, the scripts' in-loop test evaluation (they
are outside the training step).
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Step = Callable[[Tensor, Tensor], None]


# ------------------------------------------------------------------------------ data


class _HostCIFAR(torch.utils.data.Dataset):
    """uint8 HWC images -> PIL -> the official train transform, as torchvision's CIFAR10 does."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray) -> None:
        from torchvision import transforms

        self.x = images_nhwc
        self.y = labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def host_loader(
    images_nhwc: np.ndarray,
    labels: np.ndarray,
    index_batches: Sequence[Sequence[int]],
    *,
    num_workers: int,
    pin_memory: bool,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The official scripts' DataLoader over the given index batches (same images as
    ardbench's side, in the same order; the crops and flips are the loader's own draws)."""
    loader = torch.utils.data.DataLoader(
        _HostCIFAR(images_nhwc, labels),
        batch_sampler=[list(b) for b in index_batches],
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
    return iter(loader)


# Per official script: (DataLoader workers, pin_memory) and the cuDNN flags it sets.
LOADER = {
    "rslad": (2, False),  # resnet18_rslad_cifar10.py
    "ard": (2, False),  # ARD main.py
    "trades": (1, True),  # train_trades_cifar10.py: {'num_workers': 1, 'pin_memory': True}
    "pgd_at": (2, False),  # IAD pre_train/AT.py
}
CUDNN = {
    "rslad": {"deterministic": True, "benchmark": False},
    "ard": {"deterministic": False, "benchmark": True},
    "trades": {"deterministic": False, "benchmark": False},
    "pgd_at": {"deterministic": True, "benchmark": True},
}


@contextlib.contextmanager
def cudnn_flags(method: str) -> Iterator[None]:
    flags = CUDNN[method]
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic = flags["deterministic"]
    torch.backends.cudnn.benchmark = flags["benchmark"]
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _maybe_data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    return nn.DataParallel(model) if device.type == "cuda" else model


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


# ---------------------------------------------------------------------------- methods


def rslad_reference(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
) -> Step:
    """zibojia/RSLAD ``resnet18_rslad_cifar10.py`` (training loop) + ``rslad_loss.py``
    (``rslad_inner_loss``): both nets in DataParallel, T(x) under no_grad, student eval for the
    attack from x + 0.001 * randn drawn on the host, input-only gradients, then train-mode
    S(x') and S(x), KL as ``-a*b + log(b + 1e-5)*b`` meaned, ``loss.item()`` every 100 steps.
    Cost: 26 F_S + 1 F_T."""
    s_net = _maybe_data_parallel(student, device)
    t_net = _maybe_data_parallel(teacher, device)
    counter = itertools.count()

    def kl_rslad(log_q: Tensor, p: Tensor) -> Tensor:
        return torch.mean(-log_q * p + torch.log(p + 1e-5) * p)

    def step(x: Tensor, y: Tensor) -> None:
        s_net.train()
        x = x.float().to(device)
        y = y.to(device)
        optimizer.zero_grad()
        with torch.no_grad():
            t_logits = t_net(x)
        s_net.eval()
        x_adv = x.detach() + 0.001 * torch.randn(x.shape).to(device).detach()
        target = F.softmax(t_logits, dim=1)
        for _ in range(steps):
            x_adv.requires_grad_()
            with torch.enable_grad():
                loss_kl = F.kl_div(F.log_softmax(s_net(x_adv), dim=1), target, reduction="none")
                loss_kl = torch.sum(loss_kl)
            (grad,) = torch.autograd.grad(loss_kl, [x_adv])
            x_adv = _project(x_adv.detach() + step_size * torch.sign(grad.detach()), x, eps)
        s_net.train()
        x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
        optimizer.zero_grad()
        adv_logits = s_net(x_adv)
        nat_logits = s_net(x)
        p = F.softmax(t_logits.detach(), dim=1)
        loss = 5 / 6.0 * kl_rslad(F.log_softmax(adv_logits, dim=1), p) + 1 / 6.0 * kl_rslad(
            F.log_softmax(nat_logits, dim=1), p
        )
        loss.backward()
        optimizer.step()
        if next(counter) % 100 == 0:
            loss.item()

    return step


def ard_reference(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
    alpha: float = 1.0,
    temp: float = 30.0,
) -> Step:
    """goldblum/AdversariallyRobustDistillation ``main.py`` (``AttackPGD.forward``, ``train``):
    student in train mode throughout, uniform start drawn on the device, input-only gradients
    of the summed CE, the attack module's final S(x') forward, T(x) outside no_grad (frozen
    weights), the zero-weight S(x) forward, ``nn.KLDivLoss()`` (mean over all entries),
    ``loss.item()`` every step. Cost: 26 F_S + 1 F_T."""
    counter = itertools.count()

    def step(x: Tensor, y: Tensor) -> None:
        student.train()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        x_adv = x.detach() + torch.zeros_like(x).uniform_(-eps, eps)
        for _ in range(steps):
            x_adv.requires_grad_()
            with torch.enable_grad():
                loss = F.cross_entropy(student(x_adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [x_adv])
            x_adv = _project(x_adv.detach() + step_size * torch.sign(grad.detach()), x, eps)
        outputs = student(x_adv)
        teacher_outputs = teacher(x)
        basic_outputs = student(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kl_div's reduction="mean" notice
            kl = F.kl_div(
                F.log_softmax(outputs / temp, dim=1),
                F.softmax(teacher_outputs / temp, dim=1),
                reduction="mean",
            )
        loss = alpha * temp * temp * kl + (1.0 - alpha) * F.cross_entropy(basic_outputs, y)
        loss.backward()
        optimizer.step()
        next(counter)
        loss.item()

    return step


def trades_reference(
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    eps: float = 0.031,
    step_size: float = 0.007,
    steps: int = 10,
    beta: float = 6.0,
) -> Step:
    """yaodongyu/TRADES ``trades.py``@9d308f1 (``trades_loss``) + ``train_trades_cifar10.py``:
    eval-mode attack from x + 0.001 * randn drawn on the host, S(x) recomputed inside every
    attack step, input-only gradients; then train-mode S(x) (CE), S(x') and a second S(x) (the
    KL target, not detached), ``loss.item()`` every 100 steps. Cost: 39 F_S."""
    counter = itertools.count()

    def step(x: Tensor, y: Tensor) -> None:
        student.train()
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        student.eval()
        batch_size = len(x)
        x_adv = x.detach() + 0.001 * torch.randn(x.shape).to(device).detach()
        for _ in range(steps):
            x_adv.requires_grad_()
            with torch.enable_grad():
                loss_kl = F.kl_div(
                    F.log_softmax(student(x_adv), dim=1),
                    F.softmax(student(x), dim=1),
                    reduction="sum",
                )
            (grad,) = torch.autograd.grad(loss_kl, [x_adv])
            x_adv = _project(x_adv.detach() + step_size * torch.sign(grad.detach()), x, eps)
        student.train()
        x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
        optimizer.zero_grad()
        logits = student(x)
        loss_natural = F.cross_entropy(logits, y)
        loss_robust = (1.0 / batch_size) * F.kl_div(
            F.log_softmax(student(x_adv), dim=1), F.softmax(student(x), dim=1), reduction="sum"
        )
        loss = loss_natural + beta * loss_robust
        loss.backward()
        optimizer.step()
        if next(counter) % 100 == 0:
            loss.item()

    return step


def pgd_at_reference(
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
    rng_seed: int = 1,
) -> Step:
    """ZFancy/IAD ``pre_train/AT.py`` (``train``) + ``attack_generator.py`` (``PGD``,
    ``loss_fn="cent"``, ``category="Madry"``): DataParallel, eval-mode attack from a uniform
    start drawn with ``np.random.uniform`` on the host and clamped, per step a forward, the
    per-sample Kappa loop (a device sync per sample), ``model.zero_grad()`` and a full
    ``loss.backward()`` (weight gradients computed, then discarded); then a train-mode S(x'),
    ``loss.item()``, backward, step. Cost as coded: 33 F_S (23 F_S with input-only gradients)."""
    net = _maybe_data_parallel(student, device)
    rng = np.random.RandomState(rng_seed)

    def step(x: Tensor, y: Tensor) -> None:
        x, y = x.to(device), y.to(device)
        net.eval()
        kappa = torch.zeros(len(x))
        x_adv = x.detach() + torch.from_numpy(rng.uniform(-eps, eps, x.shape)).float().to(device)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
        for _ in range(steps):
            x_adv.requires_grad_()
            output = net(x_adv)
            predict = output.max(1, keepdim=True)[1]
            for p in range(len(x_adv)):
                if predict[p] == y[p]:
                    kappa[p] += 1
            net.zero_grad()
            with torch.enable_grad():
                loss_adv = F.cross_entropy(output, y)
            loss_adv.backward()
            eta = step_size * x_adv.grad.sign()
            x_adv = _project(x_adv.detach() + eta, x, eps)
        x_adv = x_adv.detach()
        net.train()
        optimizer.zero_grad()
        logit = net(x_adv)
        loss = F.cross_entropy(logit, y)
        loss.item()
        loss.backward()
        optimizer.step()

    return step


REFERENCES: dict[str, Callable[..., Step]] = {
    "rslad": rslad_reference,
    "ard": ard_reference,
    "trades": trades_reference,
    "pgd_at": pgd_at_reference,
}


def reference_cost(method: str, steps: int) -> tuple[float, float, float]:
    """(executed F_S, useful F_S, F_T) per image of the reference step, with K attack steps
    (input-only attack step ~ 2F, full forward+backward ~ 3F: reference §1.1, §2)."""
    if method in ("rslad", "ard"):
        n = 2 * steps + 6
        return n, n, 1
    if method == "trades":
        n = 3 * steps + 9
        return n, n, 0
    if method == "pgd_at":
        return 3 * steps + 3, 2 * steps + 3, 0
    raise KeyError(method)
