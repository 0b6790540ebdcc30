"""Small helpers shared by the zoo's architectures."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """Channels times the width multiplier, rounded to a multiple of `divisor`, never below it."""
    value = channels * width
    rounded = max(divisor, int(value / divisor + 0.5) * divisor)
    if divisor > 1 and rounded < 0.9 * value:  # as MobileNet does: never lose more than 10%
        rounded += divisor
    return rounded


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu6: bool = False):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True),
    )


def init_weights(model: nn.Module) -> None:
    """He init for convolutions, unit batch norm; linear layers keep PyTorch's default (trains faster)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
