"""The 8-layer CNN of paper 003: six convolutional blocks and two fully connected layers."""

from __future__ import annotations

from torch import nn

from robustcompress.models.common import conv_bn_relu, init_weights, scaled


class CNN8(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, input_size: int = 28):
        super().__init__()
        c1, c2, c3, hidden = (scaled(c, width) for c in (32, 64, 128, 256))
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, c1),
            conv_bn_relu(c1, c1),
            nn.MaxPool2d(2),
            conv_bn_relu(c1, c2),
            conv_bn_relu(c2, c2),
            nn.MaxPool2d(2),
            conv_bn_relu(c2, c3),
            conv_bn_relu(c3, c3),
            nn.MaxPool2d(2),
        )
        side = input_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))
