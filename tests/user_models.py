"""A user-defined model, imported by path in the tests (tests.user_models:tiny_net)."""

import torch
from torch import nn


def tiny_net(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


class ResidualCNN(nn.Module):
    """A small CNN with a residual connection, written as a user would (nothing of robustcompress)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(x + self.bn2(self.conv2(x))), 2)  # the residual
        x = torch.relu(self.conv3(x))
        return self.head(x.mean((2, 3)))


def residual_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return ResidualCNN(num_classes, in_channels)
