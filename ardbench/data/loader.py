"""The on-device training loader: seeded permutation, pad-4 crop (zero or reflect border) +
flip on the device.

Every random draw of epoch ``e`` comes from a CPU generator seeded by (seed, e), so a resumed
run sees the same batches as an uninterrupted one, on any device. The epoch is built once
(:meth:`DeviceLoader.epoch_data`: one transfer of the draws, a gather and the augmentation of
all images in a few large operations), so a training step costs the loader one float
conversion of a slice and nothing else: no per-step index tensors, draws or small kernels.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .batch import Batch

CROP_PADDING = 4
# images augmented per operation when an epoch is built (bounds its temporary memory)
EPOCH_CHUNK = 8192


def to_float01(x: Tensor) -> Tensor:
    """uint8 [0,255] -> float32 [0,1] (``x / 255``); float input -> float32 copy. Always a new
    contiguous tensor, so callers may modify it in place without touching the dataset."""
    if x.dtype == torch.uint8:
        return x.div(255).contiguous()  # one kernel: true division promotes uint8 to float32
    return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"ardbench-loader:{int(seed)}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def augment_batch(
    x: Tensor,
    offsets: Tensor,
    flips: Tensor,
    padding: int = CROP_PADDING,
    *,
    crop: str = "zero",
    flip: bool = True,
) -> Tensor:
    """Pad-``padding`` crop back to the input size, then horizontal flip, per image.

    ``offsets`` (B,2) int64 = (top, left) in 0..2*padding of the padded image (torchvision's
    RandomCrop draws them uniformly); ``flips`` (B,) bool. ``crop``: ``zero`` fills the border
    with 0 (``RandomCrop(32, padding=4)``), ``reflect`` mirrors the image into it
    (``padding_mode="reflect"``), ``none`` leaves the image uncropped (offsets ignored);
    ``flip=False`` ignores ``flips``. Vectorised, on x's device and dtype.
    """
    if crop == "none":
        padding = 0
        offsets = torch.zeros_like(offsets)
    if not flip:
        flips = torch.zeros_like(flips)
    b, c, h, w = x.shape
    if padding == 0:
        xp = x
    elif crop == "reflect":
        # reflect padding has no integer kernel on every device: pad in float, exact for uint8
        xp = F.pad(x.float(), (padding,) * 4, mode="reflect").to(x.dtype)
    elif crop == "zero":
        xp = F.pad(x, (padding, padding, padding, padding))  # zero fill
    else:
        raise ValueError(f"crop must be zero, reflect or none; got {crop!r}")
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # B,H
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # B,W
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    out = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    return out.contiguous()


class DeviceLoader:
    """Seeded batches from a dataset held on the device, augmented there.

    The batches of epoch ``e`` depend only on ``(seed, e)``: a CPU ``torch.Generator`` seeded
    from them draws the permutation, then per-position crop offsets (uniform in 0..8, as
    ``RandomCrop(32, padding=4)``) and flips (p=0.5, as ``RandomHorizontalFlip``), always all
    of them (so ``crop`` and ``flip`` change the images, never the order). So resuming at epoch
    k reproduces its batches with no saved state, on any device.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        seed: int,
        augment: bool,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        drop_last: bool = False,
        crop: str = "zero",
        flip: bool = True,
    ) -> None:
        if x.dim() != 4:
            raise ValueError(f"DeviceLoader expects NCHW images, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
            raise ValueError(f"DeviceLoader expects uint8 or float images, got {x.dtype}")
        if y.dim() != 1 or len(y) != len(x):
            raise ValueError(f"DeviceLoader: {len(x)} images but labels of shape {tuple(y.shape)}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = torch.device(device)
        if x.dtype not in (torch.uint8, torch.float32):
            x = x.to(torch.float32)
        self.x = x.to(self.device).contiguous()
        self.y = y.to(device=self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.crop = crop
        self.flip = bool(flip)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)

    @property
    def num_examples(self) -> int:
        return len(self.x)

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def epoch_order(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(order, offsets, flips) for the epoch, on the CPU (order: dataset indices)."""
        n = len(self.x)
        g = torch.Generator(device="cpu")
        g.manual_seed(_epoch_seed(self.seed, epoch))
        if self.shuffle:
            order = torch.randperm(n, generator=g, device="cpu")
        else:
            order = torch.arange(n, device="cpu")
        offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=g, device="cpu")
        flips = torch.rand(n, generator=g, device="cpu") < 0.5
        return order, offsets, flips

    def epoch_data(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """(images, labels, indices) of the epoch, in batch order, on the device, augmented.

        Drawn and built once per epoch: the (seed, epoch) draws of :meth:`epoch_order` go to
        the device in one transfer, the images are gathered and augmented there in a few
        large operations (chunks of :data:`EPOCH_CHUNK` images bound the temporary memory),
        in the dataset's dtype (uint8 stays uint8: one extra copy of the dataset per epoch).
        Batch ``i`` is then the slice ``[i * batch_size, (i + 1) * batch_size)``: a view,
        nothing drawn, indexed or allocated per step but its float conversion.
        """
        order, offsets, flips = self.epoch_order(epoch)
        n = len(self) * self.batch_size if self.drop_last else len(order)
        # one host-to-device copy for all the epoch's draws (rows: order, top, left, flip)
        packed = torch.stack([order[:n], offsets[:n, 0], offsets[:n, 1], flips[:n].long()])
        packed = packed.to(self.device)
        order = packed[0]
        x = self.x.index_select(0, order)
        if self.augment:
            offsets, flips = packed[1:3].T, packed[3].bool()
            for start in range(0, n, EPOCH_CHUNK):
                sl = slice(start, start + EPOCH_CHUNK)
                x[sl] = self._augment(x[sl], offsets[sl], flips[sl])
        return x, self.y.index_select(0, order), order

    def _augment(self, x: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
        return augment_batch(x, offsets, flips, crop=self.crop, flip=self.flip)

    def epoch_head(self, epoch: int, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """The first ``n`` images of the epoch as :meth:`epoch_data` builds them (augmented),
        the same images plain, and their labels; on the device, in the dataset's dtype."""
        order, offsets, flips = self.epoch_order(epoch)
        n = min(n, len(order))
        idx = order[:n].to(self.device)
        plain = self.x.index_select(0, idx)
        seen = plain
        if self.augment:
            seen = self._augment(plain, offsets[:n].to(self.device), flips[:n].to(self.device))
        return seen, plain, self.y.index_select(0, idx)

    def epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's batches: views of :meth:`epoch_data`, converted to float per batch."""
        x, y, order = self.epoch_data(epoch)
        b = self.batch_size
        for i in range(len(self)):
            sl = slice(i * b, (i + 1) * b)
            yield Batch(x=to_float01(x[sl]), y=y[sl], index=order[sl])

    def __iter__(self) -> Iterator[Batch]:  # epoch 0, for quick use
        return self.epoch_batches(0)
