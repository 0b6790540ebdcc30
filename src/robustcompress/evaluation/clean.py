"""Clean accuracy: the reference every robustness number is compared with."""

from __future__ import annotations

from torch import nn

from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)
from robustcompress.measure import accuracy, predict

__all__ = ["CleanConfig", "accuracy", "evaluate_clean", "predict"]


class CleanConfig(EvalConfig):
    batch_size: int = 512


CLEAN_METRICS = [MetricSpec("acc.clean", "accuracy", "higher", "fraction", "top-1 accuracy on the test set")]


@register_evaluation("clean", CleanConfig, metrics=CLEAN_METRICS)
def evaluate_clean(model: nn.Module, cfg: CleanConfig, ctx: EvalContext) -> Metrics:
    model.to(ctx.device)
    return {"acc.clean": accuracy(model, ctx.data.test, cfg.batch_size)}
