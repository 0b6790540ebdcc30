"""Helpers shared by the clustering, quantization and format tests."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

import robustcompress.compression  # noqa: F401  (registers stages and structures)
from robustcompress.plugins import load_plugins
from robustcompress.stages import STAGES, StageContext
from robustcompress.training import TrainConfig

load_plugins()  # the pruning area's `prune` stage, for presets


def small_splits(splits, train: int = 256, test: int = 300, val: int = 100):
    """The same data with small training, validation and test sets (fine-tuning and evaluation cost)."""
    return dataclasses.replace(
        splits,
        train=splits.train.subset(range(train)),
        val=splits.val.subset(range(min(val, len(splits.val)))),
        test=splits.test.subset(range(test)),
    )


def context(splits) -> StageContext:
    return StageContext(
        data=splits, device=torch.device("cpu"), seed=0, train=TrainConfig(batch_size=64), progress=False
    )


def run_stage(model: nn.Module, splits, name: str, **cfg) -> nn.Module:
    stage = STAGES.get(name)
    return stage.apply(model, stage.config_cls.parse(cfg), context(splits))


def zero_smallest(model: nn.Module, amount: float) -> nn.Module:
    """Stand-in for the pruning stage: set the smallest `amount` of each layer's weights to exact zero."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                w = m.weight
                k = int(amount * w.numel())
                threshold = w.abs().flatten().kthvalue(k).values
                w[w.abs() <= threshold] = 0
    return model


def layers(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
