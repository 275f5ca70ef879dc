"""PreAct ResNet-18 for 32x32 inputs (kuangliu/pytorch-cifar; Rice et al. with ``final_bn``).

Blocks BN-ReLU-conv3x3-BN-ReLU-conv3x3; when the shape changes the shortcut is a 1x1 conv (no
BN) applied to the pre-activated input. ``final_bn=False`` is kuangliu / IAD (``linear`` right
after the last stage); ``final_bn=True`` is Rice et al. "Overfitting in adversarially robust deep
learning" (ICML 2020) and RobustBench's PreActResNet-18: BN (named ``bn``) and ReLU before
pooling. Inputs in [0,1]; no normalisation inside.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .loading import register_arch


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        # Only blocks that change shape own a shortcut, so checkpoint keys match the originals.
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        num_blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        final_bn: bool = False,
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.final_bn = final_bn
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(512) if final_bn else None
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        feats = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(feats), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


@register_arch("preact_resnet18")
def preact_resnet18(num_classes: int = 10, final_bn: bool = False) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, final_bn=final_bn)


@register_arch("preact_resnet18_final_bn")
def preact_resnet18_final_bn(num_classes: int = 10) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes, final_bn=True)
