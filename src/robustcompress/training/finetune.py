"""Fine-tuning: the fields every training stage shares, the one builder of its TrainConfig, and the
`finetune` stage.

Every stage that trains (`finetune`, `prune`, `cluster`, `qat` ...) derives its config from
`FinetuneSpec` and builds its training config with `finetune_config(base, spec, defaults)`: the
experiment's `[train]`, then the stage's own policy (`defaults`), then whatever the stage config
sets. Stages differ only in their defaults: paper 000 fine-tunes compressed models with Adam at a
constant lr 1e-4, early stopping with patience 5 (`PAPER000`, clustering and QAT); paper 003
fine-tunes with the experiment's optimiser at a tenth of its lr (`tenth_lr`, the `finetune`
stage, pruning). Its standard fine-tuning T_st is `objective = "ce"`, its adversarial T_ad
`objective = "pgd"` for 3 epochs. `sam_rho` makes fine-tuning sharpness-aware (SAM); `finetune`
with SAM then `prune` is paper 004's "SAM + magnitude pruning" baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.config import Optimizer, Schedule, TrainConfig
from robustcompress.training.loop import fit

PAPER000: dict[str, Any] = {
    "optimizer": "adam",
    "weight_decay": 0.0,
    "schedule": "constant",
    "restore_best": True,
}
"""Paper 000's fine-tuning of a compressed model (with lr 1e-4, patience 5 as the stage's defaults)."""


class FinetuneSpec(StageConfig):
    """The fine-tuning fields shared by every stage that trains; unset (None) fields fall back to the
    stage's defaults, then to the experiment's [train]. `patience` None means no early stopping."""

    epochs: int = Field(0, ge=0, description="fine-tuning epochs (0: none)")
    objective: str | None = Field(None, description="training objective (ce, pgd, trades ...)")
    objective_params: dict[str, Any] | None = None
    optimizer: Optimizer | None = None
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    schedule: Schedule | None = Field(None, description="learning-rate schedule")
    batch_size: int | None = Field(None, ge=1, description="fine-tuning batch size")
    patience: int | None = Field(None, ge=1, description="early stopping on validation accuracy; None: off")
    max_steps_per_epoch: int | None = Field(None, ge=1)
    sam_rho: float | None = Field(
        None, gt=0, description="sharpness-aware fine-tuning (SAM) with this radius"
    )

    # The fields finetune_config reads (a stage may use one of these names for something else).
    FINETUNE_FIELDS: ClassVar[tuple[str, ...]] = (
        "epochs", "objective", "objective_params", "optimizer", "lr", "momentum", "weight_decay",
        "schedule", "batch_size", "patience", "max_steps_per_epoch", "sam_rho",
    )  # fmt: skip


def tenth_lr(base: TrainConfig | None) -> dict[str, Any]:
    """Paper 003's fine-tuning default: a tenth of the experiment's learning rate."""
    return {"lr": (base or TrainConfig()).lr * 0.1}


def finetune_config(
    base: TrainConfig | None, spec: FinetuneSpec, defaults: Mapping[str, Any] | None = None
) -> TrainConfig:
    """`base` (the experiment's [train]), then the stage's `defaults`, then the fields `spec` sets.

    `epochs` and `patience` always come from `spec` (patience None: no early stopping); warm-up
    never applies to fine-tuning.
    """
    values = {**(base or TrainConfig()).model_dump(), "warmup_epochs": 0, **(defaults or {})}
    for name in spec.FINETUNE_FIELDS:
        value = getattr(spec, name)
        if value is not None or name in ("epochs", "patience"):
            values[name] = value
    return TrainConfig.parse(values, where="fine-tuning")


def phase_config(base: TrainConfig | None, cfg: Any, epochs: int, **overrides: Any) -> TrainConfig:
    """One training phase of a multi-phase stage (hydra, cram, csam): the experiment's [train] at a
    tenth of its lr unless the stage sets `lr`, no warm-up, no early stopping, no SAM; the stage's
    `objective`, `objective_params`, `batch_size` and `max_steps_per_epoch` where it sets them; then
    the phase's own `overrides`."""
    base = base or TrainConfig()
    lr = getattr(cfg, "lr", None)
    values = {
        **base.model_dump(),
        "epochs": epochs,
        "lr": lr if lr is not None else base.lr * 0.1,
        "warmup_epochs": 0,
        "patience": None,
        "sam_rho": None,
    }
    for key in ("objective", "objective_params", "batch_size", "max_steps_per_epoch"):
        if getattr(cfg, key, None) is not None:
            values[key] = getattr(cfg, key)
    return TrainConfig.parse({**values, **overrides}, where=type(cfg).__name__)


def fit_phase(
    model: nn.Module,
    ctx: StageContext,
    cfg: TrainConfig,
    objective: Any = None,
    *,
    seed: int | None = None,
    **fit_options: Any,
) -> None:
    """Train `model` in place for one phase of a stage, on the stage's data, device and progress."""
    seed = ctx.seed if seed is None else seed
    fit(model, ctx.data, cfg, objective, device=ctx.device, seed=seed, progress=ctx.progress, **fit_options)


def finetune_model(
    model: nn.Module, ctx: StageContext, cfg: TrainConfig, what: str = "fine-tuning"
) -> nn.Module:
    """Train `model` in place with `cfg` on the stage's data; leaves it in eval mode."""
    sam = f", SAM rho {cfg.sam_rho:g}" if cfg.sam_rho else ""
    stop = f", patience {cfg.patience}" if cfg.patience else ""
    ctx.log(
        f"{what}: {cfg.epochs} epochs, {cfg.optimizer} lr {cfg.lr:g}, objective {cfg.objective!r}{stop}{sam}"
    )
    result = fit(model, ctx.data, cfg, device=ctx.device, seed=ctx.seed, progress=ctx.progress)
    if result.stopped_early:
        ctx.log(
            f"{what}: stopped early after {len(result.history)} of {cfg.epochs} epochs; kept epoch "
            f"{result.best_epoch} (validation accuracy {result.best_val_acc:.4f})"
        )
    return model.eval()


class FinetuneConfig(FinetuneSpec):
    """The `finetune` stage: paper 003's fine-tuning, the experiment's optimiser at a tenth of its lr."""

    epochs: int = Field(3, ge=0)
    objective: str = "ce"
    objective_params: dict[str, Any] = Field(default_factory=dict)

    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("momentum", "weight_decay", "sam_rho")


@register_stage("finetune", FinetuneConfig)
def finetune(model: nn.Module, cfg: FinetuneConfig, ctx: StageContext) -> nn.Module:
    finetune_model(model, ctx, finetune_config(ctx.train, cfg, tenth_lr(ctx.train)))
    return model
