"""Wide ResNets as in yaodongyu/TRADES ``models/wideresnet.py`` (copied by ARD and RSLAD).

Pre-activation blocks; 3x3 stem 3->16; three groups of (depth-4)/6 blocks with widths
16k/32k/64k and strides 1/2/2; BN-ReLU, ``avg_pool2d(8)``, ``fc``. In a block whose channel
count changes, ReLU(BN(x)) feeds both the residual branch and the 1x1 ``convShortcut``;
otherwise the shortcut is the identity and only the branch is pre-activated.

``wrn_34_10`` also builds ``sub_block1``, a second copy of the first group that ``forward`` never
calls: TRADES defines it, and its checkpoint ``model_cifar_wrn.pt`` (the ARD/RSLAD teacher) holds
its weights, so it is needed for a strict load (RobustBench does the same with
``sub_block1=True``). ``wrn_16_2`` and ``wrn_28_10`` have no ``sub_block1`` (RepDistiller
``models/wrn.py`` naming, which is otherwise identical).

Initialisation as TRADES: convs He-normal with fan_out, BN weight 1 / bias 0, linear bias 0.
Inputs in [0,1]; no normalisation inside.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .loading import register_arch


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        # Attribute name kept from the original so checkpoint keys match.
        self.convShortcut: nn.Conv2d | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.convShortcut is None:
            shortcut = x
            out = self.relu1(self.bn1(x))
        else:
            x = self.relu1(self.bn1(x))
            shortcut = self.convShortcut(x)
            out = x
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(
        self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    drop_rate,
                )
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        sub_block1: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        if sub_block1:
            # Never called in forward; present so the TRADES checkpoint loads strictly.
            self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.n_channels = widths[3]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        feats = F.avg_pool2d(out, 8).flatten(1)
        return self.fc(feats), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


@register_arch("wrn_34_10")
def wrn_34_10(num_classes: int = 10) -> WideResNet:
    return WideResNet(34, 10, num_classes=num_classes, sub_block1=True)


@register_arch("wrn_28_10")
def wrn_28_10(num_classes: int = 10) -> WideResNet:
    return WideResNet(28, 10, num_classes=num_classes)


@register_arch("wrn_16_2")
def wrn_16_2(num_classes: int = 10) -> WideResNet:
    return WideResNet(16, 2, num_classes=num_classes)
