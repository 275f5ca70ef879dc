"""MobileNetV2, CIFAR variant of kuangliu/pytorch-cifar (the ARD/RSLAD student).

3x3 stem with stride 1, inverted residual blocks with the cfg below (the second stage's stride is
1 instead of ImageNet's 2, so a 32x32 input ends at 4x4), 1x1 conv to 1280, ``avg_pool2d(4)``,
``linear``. Unlike torchvision's variant, every block has its 1x1 expansion conv (also when t=1),
and a stride-1 block whose channel count changes keeps a residual through a 1x1 conv + BN.
Parameter names match kuangliu checkpoints. Inputs in [0,1]; no normalisation inside.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .loading import register_arch

# (expansion t, out channels c, blocks n, first stride s)
CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 -> 1 for CIFAR
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class Block(nn.Module):
    """Expand (1x1) -> depthwise (3x3, stride) -> project (1x1)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks = []
        in_planes = 32
        for t, c, n, s in CFG:
            for stride in [s] + [1] * (n - 1):
                blocks.append(Block(in_planes, c, t, stride))
                in_planes = c
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        feats = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(feats), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


@register_arch("mobilenetv2")
def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    return MobileNetV2(num_classes=num_classes)
