"""The `prune` stage: one-shot, iterative or gradual; unstructured (global, layer-wise) or channel."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from robustcompress.compression.pruning.importance import IMPORTANCES
from robustcompress.compression.pruning.schedule import GradualPruning, iterative_amounts
from robustcompress.compression.pruning.structured import harden, prune_channels
from robustcompress.compression.pruning.summary import pruning_summary
from robustcompress.compression.pruning.unstructured import prunable_layers, prune_unstructured
from robustcompress.errors import ConfigError
from robustcompress.stages import StageContext, register_stage
from robustcompress.training.finetune import FinetuneSpec, finetune_config, tenth_lr


class PruneConfig(FinetuneSpec):
    """How to prune. `amount` is the target sparsity (unstructured) or channel ratio (channel).

    Iterative and gradual schedules fine-tune with the fine-tuning fields (`finetune_epochs` is the
    old name of `epochs`): the experiment's optimiser at a tenth of its lr and, unlike the other
    stages, no early stopping unless `patience` is set. `schedule` here is the pruning schedule.
    """

    method: Literal["global", "layerwise", "channel"] = "global"
    amount: float = Field(0.5, gt=0, lt=1)
    layers: list[Literal["conv", "linear"]] = Field(default_factory=lambda: ["conv", "linear"])
    keep_first: bool = False
    keep_last: bool = False
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns of module names to keep")
    overrides: dict[str, float] = Field(default_factory=dict, description="module-name pattern -> own amount")
    # channel pruning
    importance: str = Field("l1", description="channel importance, one of IMPORTANCES")
    scope: Literal["layer", "global"] = "layer"
    round_to: int = Field(1, ge=1)
    harden: bool = Field(True, description="channel: cut the pruned channels out (smaller, faster model)")
    # schedules
    schedule: Literal["oneshot", "iterative", "gradual"] = "oneshot"
    steps: int = Field(3, ge=1, description="iterative: number of pruning steps to reach `amount`")
    epochs: int = Field(1, ge=0, description="iterative: epochs after each step; gradual: total")
    lr: float | None = Field(None, gt=0, description="fine-tuning lr (default: a tenth of the training lr)")
    begin_step: int = Field(0, ge=0, description="gradual: first pruning step")
    end_step: int | None = Field(
        None, ge=1, description="gradual: last pruning step (default 3/4 of training)"
    )
    frequency: int = Field(50, ge=1, description="gradual: steps between mask updates")
    power: float = Field(3.0, gt=0, description="gradual: exponent of the polynomial decay")
    initial_amount: float = Field(0.0, ge=0, lt=1, description="gradual: sparsity at begin_step")

    FINETUNE_FIELDS: ClassVar[tuple[str, ...]] = tuple(
        f for f in FinetuneSpec.FINETUNE_FIELDS if f != "schedule"
    )
    OLD_NAMES: ClassVar[dict[str, str]] = {"epochs": "finetune_epochs"}
    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = (
        "objective", "objective_params", "optimizer", "momentum", "weight_decay", "batch_size", "patience",
        "sam_rho",
    )  # fmt: skip

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, value: str) -> str:
        if value not in IMPORTANCES:
            raise ValueError(f"unknown channel importance {value!r}; choose one of: {', '.join(IMPORTANCES)}")
        return value

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        for pattern, value in self.overrides.items():
            if not 0 <= value < 1:
                raise ValueError(f"overrides[{pattern!r}] = {value} must be in [0, 1)")
        if self.initial_amount >= self.amount and self.schedule == "gradual":
            raise ValueError(f"initial_amount {self.initial_amount} must be below amount {self.amount}")
        return self


def pruner(cfg: PruneConfig, example_input=None, seed: int = 0):
    """`fn(model, amount)` that prunes `model` in place to `amount` with the method of `cfg`."""

    def prune_to(model: nn.Module, amount: float) -> None:
        if cfg.method == "channel":
            prune_channels(model, amount, importance=cfg.importance, scope=cfg.scope, round_to=cfg.round_to,
                           overrides=cfg.overrides, exclude=_channel_exclude(model, cfg),
                           example_input=example_input, seed=seed)  # fmt: skip
        else:
            prune_unstructured(model, amount, cfg.method, cfg.layers, cfg.keep_first, cfg.keep_last,
                               cfg.exclude, cfg.overrides)  # fmt: skip

    return prune_to


def _channel_exclude(model: nn.Module, cfg: PruneConfig) -> list[str]:
    exclude = list(cfg.exclude)
    every = prunable_layers(model)
    if cfg.keep_first:
        exclude.append(every[0])
    if cfg.keep_last:
        exclude.append(every[-1])
    if "conv" not in cfg.layers:
        exclude += [n for n in every if isinstance(model.get_submodule(n), nn.modules.conv._ConvNd)]
    if "linear" not in cfg.layers:
        exclude += [n for n in every if isinstance(model.get_submodule(n), nn.Linear)]
    return exclude


def _train_config(ctx: StageContext, cfg: PruneConfig, restore_best: bool = True):
    return finetune_config(ctx.train, cfg, {**tenth_lr(ctx.train), "restore_best": restore_best})


@register_stage("prune", PruneConfig)
def prune(model: nn.Module, cfg: PruneConfig, ctx: StageContext) -> nn.Module:
    """Prune `model` (in place) as `cfg` says; channel pruning ends hardened unless harden = false."""
    model.to(ctx.device)
    example = ctx.data.train.x[:1].to(ctx.device) if ctx.data is not None else None
    prune_to = pruner(cfg, example, ctx.seed)
    if cfg.schedule == "oneshot":
        prune_to(model, cfg.amount)
    elif cfg.schedule == "iterative":
        _iterative(model, cfg, ctx, prune_to)
    else:
        _gradual(model, cfg, ctx, prune_to)
    if cfg.method == "channel" and cfg.harden:
        harden(model, example)
    ctx.log(pruning_summary(model, cfg.method, cfg.amount))
    return model


def _need_data(ctx: StageContext, cfg: PruneConfig) -> None:
    if ctx.data is None or len(ctx.data.train) == 0:
        raise ConfigError(f"prune schedule {cfg.schedule!r} retrains the model and needs training data")


def _iterative(model: nn.Module, cfg: PruneConfig, ctx: StageContext, prune_to) -> None:
    from robustcompress.training import fit

    _need_data(ctx, cfg)
    train_cfg = _train_config(ctx, cfg)
    for i, amount in enumerate(iterative_amounts(cfg.amount, cfg.steps)):
        prune_to(model, amount)
        ctx.log(f"iterative pruning step {i + 1}/{cfg.steps}: amount {amount:.3f}")
        if cfg.epochs:
            fit(model, ctx.data, train_cfg, device=ctx.device, seed=ctx.seed + i, progress=_progress(ctx))


def _gradual(model: nn.Module, cfg: PruneConfig, ctx: StageContext, prune_to) -> None:
    from robustcompress.training import fit

    _need_data(ctx, cfg)
    if cfg.epochs == 0:
        raise ConfigError("prune schedule 'gradual' needs epochs >= 1 (it prunes while training)")
    # restore_best would bring back an earlier, less sparse epoch
    train_cfg = _train_config(ctx, cfg, restore_best=False)
    steps = math.ceil(len(ctx.data.train) / train_cfg.batch_size)
    if train_cfg.max_steps_per_epoch:
        steps = min(steps, train_cfg.max_steps_per_epoch)
    total = steps * cfg.epochs
    end = cfg.end_step or max(cfg.begin_step + 1, int(0.75 * total))
    callback = GradualPruning(prune_to, cfg.amount, cfg.begin_step, end, cfg.frequency, cfg.initial_amount,
                              cfg.power)  # fmt: skip
    fit(
        model,
        ctx.data,
        train_cfg,
        device=ctx.device,
        seed=ctx.seed,
        callbacks=[callback],
        progress=_progress(ctx),
    )
    if callback.current < cfg.amount:  # training ended before end_step: finish the schedule
        prune_to(model, cfg.amount)
    ctx.log(f"gradual pruning: {len(callback.history)} mask updates, final amount {cfg.amount:.3f}")


def _progress(ctx: StageContext) -> bool:
    return bool(getattr(ctx, "progress", False))
