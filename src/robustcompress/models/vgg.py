"""VGG-11/16/19 with batch norm.

The default layout suits small inputs: pools are skipped once the map is 1x1, then a global pool and
a 512-wide head. `stem="imagenet"` is torchvision's ImageNet layout (biased convolutions, every pool
kept at its index, a 7x7 pool and a 4096-wide head), so its published weights load.
"""

from __future__ import annotations

from torch import nn

from robustcompress.models.common import init_weights, scaled

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGG(nn.Module):
    def __init__(self, depth="vgg16", num_classes=10, in_channels=3, width=1.0, input_size=32, stem="cifar"):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"unknown stem {stem!r}; choose 'cifar' or 'imagenet'")
        imagenet = stem == "imagenet"
        layers: list[nn.Module] = []
        cin, side = in_channels, input_size
        for item in CONFIGS[depth]:
            if item == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                elif imagenet:  # a placeholder keeps torchvision's indices for the layers after it
                    layers.append(nn.Identity())
                continue
            cout = scaled(item, width)
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=imagenet),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.features = nn.Sequential(*layers)
        if imagenet:
            hidden = scaled(4096, width)
            head: list[nn.Module] = [nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(cin * 49, hidden)]
            head += [nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(hidden, hidden)]
        else:
            hidden = scaled(512, width)
            head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, hidden)]
        self.classifier = nn.Sequential(
            *head,
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))
