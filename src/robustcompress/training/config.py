"""TrainConfig: everything the fit loop needs, validated (ranges, choices) and serialisable."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from robustcompress.config_base import StrictConfig

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["constant", "step", "cosine"]


class TrainConfig(StrictConfig):
    epochs: int = Field(10, ge=0, description="maximum number of epochs")
    batch_size: int = Field(128, ge=1)
    optimizer: Optimizer = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Schedule = "cosine"
    step_every: int = Field(10, ge=1, description="epochs between lr drops (schedule = step)")
    gamma: float = Field(0.1, gt=0, le=1, description="lr factor at each drop (schedule = step)")
    warmup_epochs: int = Field(0, ge=0)
    patience: int | None = Field(None, ge=1, description="early stopping on validation accuracy")
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True
    objective: str = "ce"
    objective_params: dict[str, Any] = Field(default_factory=dict)
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported, else fp16)")
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(512, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (quick runs)")
    augment: list[Literal["crop", "flip"]] = Field(
        default_factory=list, description="random crops (zero-padded by crop_padding) and/or mirror images"
    )
    crop_padding: int = Field(4, ge=1, description="largest shift of a random crop, in pixels")
    sam_rho: float | None = Field(
        None,
        gt=0,
        description="sharpness-aware minimisation radius (Foret et al.; 0.05 typical); off when unset",
    )

    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("augment", "crop_padding", "sam_rho")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for a (0-based) epoch; computed, not stateful, so resuming is exact."""
        if self.warmup_epochs and epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            return self.lr * self.gamma ** (epoch // self.step_every)
        span = max(1, self.epochs - self.warmup_epochs)
        t = (epoch - self.warmup_epochs) / span
        return 0.5 * self.lr * (1 + math.cos(math.pi * t))
