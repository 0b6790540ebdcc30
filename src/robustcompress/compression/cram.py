"""The `cram` stage: Compression-Aware Minimisation (Peste et al., ICLR 2023), then one-shot pruning.

CrAM trains the dense model so that it survives being pruned in one shot. Each step is SAM's,
except that the ascent point is compressed:

    w_c = C_s(w + rho * g)      top-k magnitude pruning at a sparsity s drawn per step from a set
    g_c = grad L(w_c)           (masked to w_c's support: "sparse gradient")
    w  <- base_step(w, g_c + g) (CrAM+: the dense gradient g is added)

After training, the model is pruned by global magnitude to `amount`, its batch-norm statistics
are re-estimated on about 1,000 training images (pruning shifts every activation's mean and
variance; CrAM's results depend on this), and it is optionally fine-tuned with the mask fixed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from robustcompress.compression.pruning.scored import keep_mask, leaf_name, removed_count
from robustcompress.compression.pruning.summary import pruning_summary
from robustcompress.compression.pruning.unstructured import prunable_layers, prune_unstructured
from robustcompress.errors import ConfigError
from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.finetune import fit_phase, phase_config
from robustcompress.training.sam import SAM

DEFAULT_SPARSITIES = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # CrAM's CIFAR-10 "multi" set


class CrAM(SAM):
    """SAM whose ascent point is pruned to a sparsity drawn from `sparsities` at every step.

    `targets` are the tensors compressed (conv / linear weights, or their mask originals); with
    `normalize` the ascent is rho * g / ||g|| (SAM's), else rho * g (CrAM's code default).
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        model: nn.Module,
        targets: list[torch.Tensor],
        sparsities: list[float],
        rho: float = 0.05,
        normalize: bool = False,
        plus: bool = True,
        sparse_grad: bool = True,
        generator: torch.Generator | None = None,
        grad_clip: float | None = None,
    ):
        super().__init__(base, model, rho, grad_clip)
        self.targets, self.sparsities, self.normalize = targets, list(sparsities), normalize
        self.plus, self.sparse_grad, self.generator = plus, sparse_grad, generator
        self.drawn: list[float] = []  # the sparsity of every step, for inspection
        self._masks: list[torch.Tensor] = []
        self._clean: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def perturbation(self):
        if self.normalize:
            return super().perturbation()
        return {p: p.grad * self.rho for p in self.params if p.grad is not None}

    @torch.no_grad()
    def ascend(self) -> None:
        if self.plus:
            self._clean = {p: p.grad.clone() for p in self.params if p.grad is not None}
        super().ascend()
        i = int(torch.randint(len(self.sparsities), (1,), generator=self.generator))
        self.drawn.append(self.sparsities[i])
        flat = torch.cat([t.detach().abs().flatten().float() for t in self.targets])
        keep = keep_mask(flat, removed_count(self.sparsities[i], flat.numel()))
        moved = {id(p) for p, _ in self._saved}  # only tensors that descend() puts back
        self._masks, offset = [], 0
        for t in self.targets:
            m = keep[offset : offset + t.numel()].view_as(t).to(t.dtype)
            offset += t.numel()
            if id(t) in moved:
                t.mul_(m)
            self._masks.append(m)

    @torch.no_grad()
    def finish_gradients(self) -> None:
        if self.sparse_grad:
            for t, m in zip(self.targets, self._masks):
                if t.grad is not None:
                    t.grad.mul_(m)
        for p, g in self._clean.items():
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)
        self._masks, self._clean = [], {}


class CramConfig(StageConfig):
    amount: float = Field(0.5, gt=0, lt=1, description="final sparsity of the one-shot magnitude pruning")
    method: Literal["global", "layerwise"] = "global"
    layers: list[Literal["conv", "linear"]] = Field(default_factory=lambda: ["conv", "linear"])
    exclude: list[str] = Field(default_factory=list)
    epochs: int = Field(2, ge=0, description="CrAM training of the dense model")
    rho: float = Field(0.05, gt=0, description="ascent radius")
    normalize: bool = Field(
        False, description="ascent rho * g / ||g|| (SAM) instead of rho * g (CrAM's code)"
    )
    sparsities: list[float] | None = Field(
        None, description="sparsities drawn per step (default 0.3 ... 0.9 and `amount`)"
    )
    plus: bool = Field(True, description="CrAM+: add the dense gradient")
    sparse_grad: bool = Field(True, description="mask the compressed point's gradient to its support")
    objective: str = "ce"
    objective_params: dict[str, Any] = Field(default_factory=dict)
    lr: float | None = Field(None, gt=0, description="lr of both trainings (default: a tenth of [train].lr)")
    calibration_images: int = Field(1000, ge=0, description="batch-norm re-calibration after pruning")
    finetune_epochs: int = Field(0, ge=0, description="optional fine-tuning with the mask fixed")
    batch_size: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> CramConfig:
        for s in self.sparsities or []:
            if not 0 <= s < 1:
                raise ValueError(f"sparsities must lie in [0, 1); got {s}")
        if self.sparsities is not None and not self.sparsities:
            raise ValueError("sparsities must not be empty")
        return self

    def drawn_sparsities(self) -> list[float]:
        return self.sparsities or sorted(set(DEFAULT_SPARSITIES) | {self.amount})


def compression_targets(model: nn.Module, layers=("conv", "linear"), exclude=()) -> list[torch.Tensor]:
    """The stored tensors behind the prunable weights (the original under a pruning mask)."""
    params = dict(model.named_parameters())
    return [params[leaf_name(model, n, "weight")] for n in prunable_layers(model, layers, exclude=exclude)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> int:
    """Re-estimate every batch norm's running mean and variance on `images`.

    The statistics are reset and averaged over the batches with equal weight (momentum None), so
    with equal-sized batches the running mean is the exact mean over `images`.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: the exact average over all batches seen
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size].to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)


@register_stage("cram", CramConfig)
def cram(model: nn.Module, cfg: CramConfig, ctx: StageContext) -> nn.Module:
    """CrAM training, one-shot magnitude pruning, batch-norm re-calibration, optional fine-tuning."""

    if ctx.data is None or len(ctx.data.train) == 0:
        raise ConfigError("the cram stage trains and needs training data")
    model.to(ctx.device)
    if cfg.epochs:
        gen = torch.Generator().manual_seed(ctx.seed)
        targets = compression_targets(model, cfg.layers, cfg.exclude)
        train_cfg = phase_config(ctx.train, cfg, cfg.epochs)

        def wrapper(base, net):
            return CrAM(
                base,
                net,
                targets,
                cfg.drawn_sparsities(),
                cfg.rho,
                cfg.normalize,
                cfg.plus,
                cfg.sparse_grad,
                gen,
                train_cfg.grad_clip,
            )

        ctx.log(f"cram: {cfg.epochs} epochs, rho {cfg.rho:g}, sparsities {cfg.drawn_sparsities()}")
        fit_phase(model, ctx, train_cfg, sam=wrapper)
    prune_unstructured(model, cfg.amount, cfg.method, cfg.layers, exclude=cfg.exclude)
    n = recalibrate_batchnorm(model, ctx.data.train.x[: cfg.calibration_images])
    ctx.log(
        f"cram: pruned to {cfg.amount:g}, {n} batch norms re-calibrated on {cfg.calibration_images} images"
    )
    if cfg.finetune_epochs:
        fit_phase(model, ctx, phase_config(ctx.train, cfg, cfg.finetune_epochs), seed=ctx.seed + 1)
    ctx.log(pruning_summary(model, f"cram/{cfg.method}", cfg.amount))
    return model.eval()
