"""MobileNetV2. The CIFAR variant (default) has stride 1 in the stem and the 24-channel stage, so 32x32
inputs keep detail; `stem="imagenet"` has ImageNet's stride 2 there (the weights are the same shape)."""

from __future__ import annotations

from torch import nn

from robustcompress.models.common import conv_bn_relu, init_weights, scaled

# expansion, output channels, repeats, stride (CIFAR strides)
SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
IMAGENET_SETTINGS = [(t, c, n, 2 if c == 24 else s) for t, c, n, s in SETTINGS]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu(cin, hidden, 1, relu6=True))
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, groups=hidden, relu6=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=1.0, stem="cifar"):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
        settings = IMAGENET_SETTINGS if stem == "imagenet" else SETTINGS
        cin = scaled(32, width, 8)
        blocks: list[nn.Module] = [
            conv_bn_relu(in_channels, cin, 3, 2 if stem == "imagenet" else 1, relu6=True)
        ]
        for t, c, n, s in settings:
            cout = scaled(c, width, 8)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = scaled(1280, max(1.0, width), 8)
        blocks.append(conv_bn_relu(cin, last, 1, relu6=True))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes)
        )
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))
