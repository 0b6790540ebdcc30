"""A user's own stage and evaluation, each in this one file, as docs/architecture.md shows.

`sharpen` scales the classifier's last linear layer (weights and bias) by `factor`: predictions
keep their class, softmax confidence rises for factor > 1 and falls below 1. `confidence` measures
the mean top-class probability (better higher) and the mean predictive entropy (better lower).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from robustcompress.evaluation.registry import EvalConfig, EvalContext, MetricSpec, register_evaluation
from robustcompress.stages import StageConfig, StageContext, register_stage


class SharpenConfig(StageConfig):
    factor: float = Field(2.0, gt=0)


@register_stage("sharpen", SharpenConfig)
@torch.no_grad()
def sharpen(model: nn.Module, cfg: SharpenConfig, ctx: StageContext) -> nn.Module:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    last.weight.mul_(cfg.factor)
    last.bias.mul_(cfg.factor)
    return model


class ConfidenceConfig(EvalConfig):
    batch_size: int = Field(256, ge=1)


@register_evaluation(
    "confidence",
    ConfidenceConfig,
    metrics=[
        MetricSpec("conf.mean", "confidence", "higher", "fraction", "mean top-class probability"),
        MetricSpec("conf.entropy", "entropy", "lower", "", "mean predictive entropy (nats)"),
    ],
)
@torch.no_grad()
def confidence(model: nn.Module, cfg: ConfidenceConfig, ctx: EvalContext) -> dict[str, float]:
    model.eval().to(ctx.device)
    top, entropy, n = 0.0, 0.0, 0
    for x, _ in ctx.data.test.batches(cfg.batch_size):
        p = torch.softmax(model(x.to(ctx.device)), dim=1)
        top += float(p.max(dim=1).values.sum())
        entropy += float(-(p * p.clamp_min(1e-12).log()).sum())
        n += len(x)
    return {"conf.mean": top / n, "conf.entropy": entropy / n}
