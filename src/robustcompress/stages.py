"""The stage protocol: named model transforms (prune, cluster, ptq, qat, finetune ...), a config each.

It sits on the lowest floor so that compression, training and experiments all import it and none
of them imports another to find it. A stage is `fn(model, cfg, ctx) -> model` registered with
`@register_stage(name, ConfigCls)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from robustcompress.config_base import StrictConfig
from robustcompress.registry import Registry

if TYPE_CHECKING:
    from robustcompress.data import DataSplits
    from robustcompress.training.config import TrainConfig


class StageConfig(StrictConfig):
    """Base of every stage config; subclasses add their fields with defaults and ranges."""


@dataclass
class StageContext:
    data: DataSplits
    device: torch.device
    seed: int = 0
    train: TrainConfig | None = None  # the experiment's training config, a default for fine-tuning
    workdir: Path | None = None
    parent: nn.Module | None = None  # the uncompressed baseline
    log: Callable[[str], None] = field(default=lambda msg: None)
    progress: bool = True  # show progress bars in long stages


@dataclass(frozen=True)
class StageDef:
    name: str
    config_cls: type[StageConfig]
    apply: Callable[[nn.Module, StageConfig, StageContext], nn.Module]


STAGES: Registry[StageDef] = Registry("stage")


def register_stage(name: str, config_cls: type[StageConfig]):
    """Decorator: `@register_stage("prune", PruneConfig)` on `fn(model, cfg, ctx) -> model`."""

    def add(fn):
        STAGES.register(name)(StageDef(name, config_cls, fn))
        return fn

    return add
