"""The `finetune` stage: more training of a (compressed) model with any objective.

Paper 003's standard fine-tuning T_st is `objective = "ce"`; its adversarial fine-tuning T_ad is
`objective = "pgd"` for 3 epochs. Unset optimiser fields fall back to the experiment's [train].
`sam_rho` makes it sharpness-aware (SAM); `finetune` with SAM then `prune` is paper 004's
"SAM + magnitude pruning" baseline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.config import TrainConfig
from robustcompress.training.loop import fit


class FinetuneConfig(StageConfig):
    epochs: int = Field(3, ge=0)
    objective: str = "ce"
    objective_params: dict[str, Any] = Field(default_factory=dict)
    optimizer: str | None = None
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    schedule: str | None = None
    batch_size: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    sam_rho: float | None = Field(
        None, gt=0, description="sharpness-aware fine-tuning (SAM) with this radius"
    )

    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("momentum", "weight_decay", "sam_rho")


def finetune_config(base: TrainConfig | None, cfg: FinetuneConfig) -> TrainConfig:
    """The experiment's training config with the stage's overrides (lr defaults to a tenth)."""
    base = base or TrainConfig()
    overrides = {
        "epochs": cfg.epochs,
        "objective": cfg.objective,
        "objective_params": cfg.objective_params,
        "lr": cfg.lr if cfg.lr is not None else base.lr * 0.1,
        "patience": cfg.patience,
        "warmup_epochs": 0,
    }
    keys = (
        "optimizer",
        "momentum",
        "weight_decay",
        "schedule",
        "batch_size",
        "max_steps_per_epoch",
        "sam_rho",
    )
    for key in keys:
        if getattr(cfg, key) is not None:
            overrides[key] = getattr(cfg, key)
    return TrainConfig.parse({**base.model_dump(), **overrides}, where="finetune")


@register_stage("finetune", FinetuneConfig)
def finetune(model: nn.Module, cfg: FinetuneConfig, ctx: StageContext) -> nn.Module:
    train_cfg = finetune_config(ctx.train, cfg)
    sam = f", SAM rho {train_cfg.sam_rho:g}" if train_cfg.sam_rho else ""
    ctx.log(f"fine-tuning {cfg.epochs} epochs with objective {cfg.objective!r}, lr {train_cfg.lr:g}{sam}")
    fit(model, ctx.data, train_cfg, device=ctx.device, seed=ctx.seed, progress=ctx.progress)
    return model
