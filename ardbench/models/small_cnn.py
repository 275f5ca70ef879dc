"""A small, fast CNN for the CPU demo and tests (not from the literature).

Three conv3x3-BN-ReLU stages 3->32->64->128, each with stride 2 (32x32 -> 16 -> 8 -> 4), global
average pool, ``linear`` 128->C [128]. On 32x32 inputs: about 2.6 M multiply-adds (5.2 MFLOPs)
per image and 95 K parameters. The stride-2 stem matters on CPU: a full-resolution first stage
made a training step about 5x slower. Inputs in [0,1]; no normalisation inside.
"""

from __future__ import annotations

from torch import Tensor, nn

from .loading import register_arch


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv_bn(3, 32, 2)
        self.conv2 = _conv_bn(32, 64, 2)
        self.conv3 = _conv_bn(64, 128, 2)
        self.linear = nn.Linear(128, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.conv3(self.conv2(self.conv1(x)))
        feats = out.mean(dim=(2, 3))
        return self.linear(feats), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[0]


@register_arch("small_cnn")
def small_cnn(num_classes: int = 10) -> SmallCNN:
    return SmallCNN(num_classes=num_classes)
