"""Fine-tuning inside compression stages (cluster-preserving training, QAT) through the fit loop.

Paper 000 fine-tunes every compressed model with Adam for at most 30 epochs, early stopping with
patience 5 on validation accuracy. Stages call this with their own budget; the experiment's
training config supplies everything else (objective, batch size, device handling).
"""

from __future__ import annotations

from torch import nn

from robustcompress.stages import StageContext


def finetune(
    model: nn.Module,
    ctx: StageContext,
    epochs: int,
    lr: float = 1e-4,
    patience: int | None = 5,
    batch_size: int | None = None,
) -> None:
    """Train `model` in place with Adam (no weight decay, constant lr); keep the best validation weights."""
    if epochs <= 0:
        return
    from robustcompress.training import TrainConfig, fit

    base = ctx.train.model_dump() if ctx.train is not None else {}
    overrides = {
        "epochs": epochs,
        "optimizer": "adam",
        "lr": lr,
        "weight_decay": 0.0,
        "schedule": "constant",
        "warmup_epochs": 0,
        "patience": patience,
        "restore_best": True,
    }
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    cfg = TrainConfig.parse({**base, **overrides}, where="compression fine-tuning")
    ctx.log(f"fine-tuning up to {epochs} epochs (Adam, lr {lr:g}, patience {patience})")
    fit(model, ctx.data, cfg, device=ctx.device, seed=ctx.seed, progress=getattr(ctx, "progress", False))
    model.eval()
