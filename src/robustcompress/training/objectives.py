"""Training objectives: callables (model, x, y) -> (loss, clean logits), registered by name.

The fit loop never changes when a new objective (adversarial, margin ...) is added.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.errors import ConfigError
from robustcompress.registry import Registry

OBJECTIVES: Registry[type] = Registry("objective")


def register_objective(name: str):
    """Class decorator: the class's keyword arguments are the objective's parameters."""
    return OBJECTIVES.register(name)


def make_objective(name: str, **params: Any):
    cls = OBJECTIVES.get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for objective {name!r}: {exc}") from None


@register_objective("ce")
class CrossEntropy:
    """Standard training: cross-entropy on clean images (optionally label-smoothed)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


OBJECTIVES.register("standard")(CrossEntropy)
