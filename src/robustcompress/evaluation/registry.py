"""Evaluations: named functions (model, cfg, ctx) -> {metric name: value}."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcompress.config_base import StrictConfig
from robustcompress.registry import Registry

Metrics = dict[str, float | int | str]


class EvalConfig(StrictConfig):
    """Base of every evaluation config."""


@dataclass
class EvalContext:
    data: Any  # robustcompress.data.DataSplits; evaluations use data.test
    device: torch.device
    seed: int = 0
    parent: nn.Module | None = None  # the uncompressed baseline, if any
    baseline_metrics: dict[str, Any] | None = None  # the baseline's metrics (e.g. for mCE)
    workdir: Path | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)


@dataclass(frozen=True)
class EvaluationDef:
    name: str
    config_cls: type[EvalConfig]
    run: Callable[[nn.Module, EvalConfig, EvalContext], Metrics]


EVALUATIONS: Registry[EvaluationDef] = Registry("evaluation")


def register_evaluation(name: str, config_cls: type[EvalConfig]):
    """Decorator: `@register_evaluation("clean", CleanConfig)` on `fn(model, cfg, ctx) -> metrics`."""

    def add(fn):
        EVALUATIONS.register(name)(EvaluationDef(name, config_cls, fn))
        return fn

    return add
