"""Clean accuracy: the reference every robustness number is compared with."""

from __future__ import annotations

import torch
from torch import nn

from robustcompress.device import model_device
from robustcompress.evaluation.registry import EvalConfig, EvalContext, Metrics, register_evaluation


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels for images x (any device), in eval mode; returns labels on x's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(x[i : i + batch_size].to(device)).argmax(1).to(x.device))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: nn.Module, data, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on an ImageData (fraction in [0, 1])."""
    if len(data) == 0:
        return float("nan")
    return (predict(model, data.x, batch_size) == data.y).float().mean().item()


class CleanConfig(EvalConfig):
    batch_size: int = 512


@register_evaluation("clean", CleanConfig)
def evaluate_clean(model: nn.Module, cfg: CleanConfig, ctx: EvalContext) -> Metrics:
    model.to(ctx.device)
    return {"acc.clean": accuracy(model, ctx.data.test, cfg.batch_size)}
