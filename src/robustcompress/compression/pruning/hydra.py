"""The `hydra` stage: pruning by importance scores learned under the robust loss (Sehwag et al. 2020).

Every prunable weight gets a score of its own shape. The forward pass uses the weights times the
hard top-k mask of |scores| (exactly `amount` removed); the backward pass sends the gradient
straight through the top-k to the scores. Weights (and every other parameter) are frozen while
the scores train with the robust loss (any objective; default pgd). Scores start from the scaled
magnitudes sqrt(6 / fan_in) * w / max|w| (HYDRA's scaled-score-init: the top-k mask of the start
is magnitude pruning). Then the mask is fixed as an ordinary pruning mask and the weights are
fine-tuned with the same loss.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from robustcompress.compression.pruning.masks import bake_masks, is_masked
from robustcompress.compression.pruning.scored import MaskedModel, MaskSpace, straight_through
from robustcompress.compression.pruning.summary import pruning_summary
from robustcompress.errors import ConfigError
from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.finetune import fit_phase, phase_config


class HydraConfig(StageConfig):
    amount: float = Field(0.5, gt=0, lt=1, description="share of the prunable weights removed")
    scope: Literal["layer", "global"] = Field("layer", description="top-k per layer (HYDRA) or over all")
    layers: list[Literal["conv", "linear"]] = Field(default_factory=lambda: ["conv", "linear"])
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns of layers to leave dense")
    objective: str = Field("pgd", description="the robust loss of both phases")
    objective_params: dict[str, Any] = Field(default_factory=dict)
    score_epochs: int = Field(2, ge=0, description="score search with frozen weights (HYDRA: 20)")
    finetune_epochs: int = Field(2, ge=0, description="fine-tuning with the mask fixed (HYDRA: 100)")
    score_lr: float = Field(0.1, gt=0, description="SGD lr of the scores (HYDRA: 0.1, cosine)")
    lr: float | None = Field(None, gt=0, description="fine-tuning lr (default: a tenth of [train].lr)")
    scaled_init: bool = Field(
        True, description="scores from scaled magnitudes (else HYDRA's kaiming-uniform)"
    )
    batch_size: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)


@torch.no_grad()
def scaled_scores(
    model: nn.Module, space: MaskSpace, scaled: bool = True, seed: int = 0
) -> dict[str, torch.Tensor]:
    """sqrt(6 / fan_in) * w / max|w| per layer, or kaiming-uniform noise of the same bound."""
    out = {}
    gen = torch.Generator().manual_seed(seed)
    for u in space.units:
        w = model.get_submodule(u).weight.detach().float()
        bound = math.sqrt(6 / max(1, w[0].numel()))
        if scaled:
            out[u] = bound * w / w.abs().max().clamp_min(1e-12)
        else:
            out[u] = ((torch.rand(w.shape, generator=gen) * 2 - 1) * bound).to(w.device)
    return out


@register_stage("hydra", HydraConfig)
def hydra(model: nn.Module, cfg: HydraConfig, ctx: StageContext) -> nn.Module:
    """Score search with frozen weights, then the top-k mask fixed and the weights fine-tuned."""

    if ctx.data is None or len(ctx.data.train) == 0:
        raise ConfigError("the hydra stage trains and needs training data")
    model.to(ctx.device)
    if is_masked(model):  # earlier masks become exact zeros, which score lowest at the start
        bake_masks(model)
    space = MaskSpace.weights(model, cfg.layers, cfg.exclude)

    def top_k(scores: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        size = {u: s.abs() for u, s in scores.items()}
        hard = space.binarise(size, cfg.amount, cfg.scope)
        return {u: straight_through(size[u], hard[u]) for u in size}

    masked = MaskedModel(model, space, scaled_scores(model, space, cfg.scaled_init, ctx.seed), top_k)
    if cfg.score_epochs:
        ctx.log(f"hydra: {cfg.score_epochs} epochs of score search ({cfg.objective}), weights frozen")
        score_cfg = phase_config(
            ctx.train, cfg, cfg.score_epochs, lr=cfg.score_lr, optimizer="sgd", restore_best=True
        )
        fit_phase(masked, ctx, score_cfg)
    binary = space.binarise({u: s.detach().abs() for u, s in masked.current().items()}, cfg.amount, cfg.scope)
    model = masked.release()
    space.prune(model, binary)
    if cfg.finetune_epochs:
        ctx.log(f"hydra: fine-tuning {cfg.finetune_epochs} epochs ({cfg.objective}) with the mask fixed")
        tune = phase_config(ctx.train, cfg, cfg.finetune_epochs, restore_best=True)
        fit_phase(model, ctx, tune, seed=ctx.seed + 1)
    ctx.log(pruning_summary(model, f"hydra/{cfg.scope}", cfg.amount))
    return model.eval()
