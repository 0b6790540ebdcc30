"""The `csam` stage: Compression-aware Sharpness Minimisation (paper 004, arXiv 2601.20301).

SAM seeks flat minima in weight space; pruning moves a model in *mask* space, so C-SAM seeks
masks whose neighbourhood is flat. Three phases:

1. pre-training: the dense model is trained on data augmented with the transformation family T;
2. mask search, weights frozen: soft masks C in [0, 1] (per weight or per channel class) minimise
       lambda_stab * L_stab + lambda_ratio * L_ratio + lambda_consist * L_consist + lambda_1 * L_1
   (+ lambda_ce * cross-entropy, our addition, see docs/csam.md) over noisy masks
   C_xi = clip(C + xi, 0, 1), xi ~ U(-mu, mu);
3. binarisation by top-k to exactly `amount`, then fine-tuning with the masks fixed.

The result is an ordinary pruned model (pruning masks; channels cut out by `harden`), so it
checkpoints and composes with `cluster`, `ptq` and `qat` after it. The losses are plain functions
of probabilities so that each can be checked on inputs where its value is known.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from robustcompress.compression.pruning.scored import MaskedModel, MaskSpace, straight_through
from robustcompress.compression.pruning.structured import harden
from robustcompress.compression.pruning.summary import pruning_summary
from robustcompress.errors import ConfigError
from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.finetune import fit_phase, phase_config

# ------------------------------------------------------------------------------------------- losses


def mask_noise(mask: torch.Tensor, mu: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """C_xi = clip(C + xi, 0, 1) with xi ~ U(-mu, mu) drawn per entry (differentiable in C)."""
    if mu == 0:
        return mask
    xi = torch.rand(mask.shape, generator=generator, device=mask.device, dtype=mask.dtype)
    return (mask + (2 * xi - 1) * mu).clamp(0, 1)


def stability_loss(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """L_stab = E ||p_{C_xi}(x) - p_bar(x)||^2 over two mask samples (p_bar their mean); 0 iff p1 == p2."""
    mean = (p1 + p2) / 2
    return (((p1 - mean) ** 2).sum(1) + ((p2 - mean) ** 2).sum(1)).mean() / 2


def ratio_loss(p: torch.Tensor, p_t: torch.Tensor, eta: float = 1.0, floor: float = 1e-3) -> torch.Tensor:
    """L_ratio = E softplus(r - eta), r = ||p(x) - p(T(x))||_inf / (top-2 margin of p(x)).

    A prediction cannot change while the discrepancy stays below the margin; r above eta is
    penalised smoothly. The margin is floored at `floor` so that r stays finite.
    """
    discrepancy = (p - p_t).abs().amax(1)
    top2 = p.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).clamp_min(floor)
    return F.softplus(discrepancy / margin - eta).mean()


def consistency_loss(soft_logits: torch.Tensor, hard_logits: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """L_consist: KL(p_soft || p_binary) (or the squared distance, the paper's weaker MSE ablation)."""
    log_soft, log_hard = F.log_softmax(soft_logits, 1), F.log_softmax(hard_logits, 1)
    if kind == "mse":
        return ((log_soft.exp() - log_hard.exp()) ** 2).sum(1).mean()
    return (log_soft.exp() * (log_soft - log_hard)).sum(1).mean()


def l1_loss(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_1: the mean mask value (a mean, not a sum, so lambda_1 does not depend on the model's size)."""
    total = sum(m.sum() for m in masks.values())
    return total / sum(m.numel() for m in masks.values())


# ------------------------------------------------------------------------------------------- config


class CSAMConfig(StageConfig):
    """C-SAM's phases and loss. Defaults are the paper's, except the CPU-sized epoch counts."""

    amount: float = Field(0.5, gt=0, lt=1, description="sparsity: share of weights (or channels) removed")
    granularity: Literal["weight", "channel"] = "weight"
    scope: Literal["global", "layer"] | None = Field(
        None,
        description="top-k over all weights or per layer (default: global for weights; channels: per layer)",
    )
    layers: list[Literal["conv", "linear"]] = Field(default_factory=lambda: ["conv", "linear"])
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns of layers to leave dense")
    transforms: str = Field("rotation+brightness", description="transformation family spec (certification)")
    augment_prob: float = Field(0.5, ge=0, le=1, description="share of training images transformed")
    pretrain_epochs: int = Field(2, ge=0, description="phase 1 (paper: 50)")
    search_epochs: int = Field(4, ge=0, description="phase 2, mask search with frozen weights (paper: 100)")
    finetune_epochs: int = Field(2, ge=0, description="phase 3, after binarisation (paper: 50)")
    mu: float = Field(0.5, ge=0, le=1, description="mask noise xi ~ U(-mu, mu)")
    tau: float = Field(30.0, ge=0, lt=100, description="percentile-scaled init: top tau% start at 1")
    eta: float = Field(1.0, ge=0, description="safety threshold of L_ratio")
    lambda_stab: float = Field(5.0, ge=0)
    lambda_ratio: float = Field(1.0, ge=0)
    lambda_consist: float = Field(1.0, ge=0)
    lambda_1: float = Field(0.01, ge=0, description="weight of the mean mask value")
    lambda_ce: float = Field(1.0, ge=0, description="cross-entropy on the noisy-mask predictions (ours)")
    consist: Literal["kl", "mse"] = "kl"
    ratio_masks: Literal["pair", "shared"] = Field(
        "pair", description="x and T(x) under two mask samples (pair) or the same one"
    )
    objective: str = Field("ce", description="objective of phases 1 and 3 (on augmented data)")
    objective_params: dict[str, Any] = Field(default_factory=dict)
    lr: float | None = Field(
        None, gt=0, description="weights' lr in phases 1 and 3 (default: a tenth of [train].lr)"
    )
    mask_lr: float = Field(0.01, gt=0, description="Adam lr of the soft masks")
    batch_size: int | None = Field(None, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    seed: int | None = Field(None, description="noise and transformation draws (default: the experiment's)")

    @model_validator(mode="after")
    def _check(self) -> CSAMConfig:
        from robustcompress.certification.transforms import make_family

        make_family(self.transforms)  # an unknown family fails here, not hours into a run
        return self


# ------------------------------------------------------------------------------------------- phases


class Augmented:
    """An objective on batches whose images are transformed by the family with probability `prob`."""

    def __init__(self, objective, family, prob: float, generator: torch.Generator):
        self.objective, self.family, self.prob, self.generator = objective, family, prob, generator

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if self.prob > 0:
            pick = torch.rand(len(x), generator=self.generator, device=self.generator.device) < self.prob
            pick = pick.to(x.device)
            if bool(pick.any()):
                x = x.clone()
                x[pick] = self.family.sample(x[pick], self.generator)
        return self.objective(model, x, y)


class CSAMLoss:
    """The mask-search objective `(masked_model, x, y) -> (loss, logits)`; `.last` holds the parts."""

    def __init__(self, cfg: CSAMConfig, transform, amount: float, scope: str, generator: torch.Generator,
                 tiebreak: dict[str, torch.Tensor] | None = None):  # fmt: skip
        self.cfg, self.transform, self.amount, self.scope = cfg, transform, amount, scope
        self.generator, self.tiebreak = generator, tiebreak
        self.last: dict[str, float] = {}

    def __call__(self, model: MaskedModel, x: torch.Tensor, y: torch.Tensor):
        cfg, gen = self.cfg, self.generator
        soft = {u: v.clamp(0, 1) for u, v in model.current().items()}
        noisy1 = {u: mask_noise(v, cfg.mu, gen) for u, v in soft.items()}
        noisy2 = {u: mask_noise(v, cfg.mu, gen) for u, v in soft.items()}
        x_t = self.transform(x, gen)
        n = len(x)
        if cfg.ratio_masks == "pair":  # x under sample 1, T(x) under sample 2 (batched with x)
            logits1 = model(x, noisy1)
            both = model(torch.cat([x, x_t]), noisy2)
            logits2, logits_t = both[:n], both[n:]
        else:
            both = model(torch.cat([x, x_t]), noisy1)
            logits1, logits_t = both[:n], both[n:]
            logits2 = model(x, noisy2)
        p1, p2, p_t = logits1.softmax(1), logits2.softmax(1), logits_t.softmax(1)
        binary = model.space.binarise(soft, self.amount, self.scope, self.tiebreak)
        hard = {u: straight_through(soft[u], binary[u]) for u in soft}
        parts = {
            "stab": stability_loss(p1, p2),
            "ratio": ratio_loss(p1, p_t, cfg.eta),
            "consist": consistency_loss(model(x, soft), model(x, hard), cfg.consist),
            "l1": l1_loss(soft),
            "ce": F.cross_entropy(logits1, y),
        }
        weights = {"stab": cfg.lambda_stab, "ratio": cfg.lambda_ratio, "consist": cfg.lambda_consist,
                   "l1": cfg.lambda_1, "ce": cfg.lambda_ce}  # fmt: skip
        loss = sum(weights[k] * v for k, v in parts.items())
        self.last = {k: float(v.detach()) for k, v in parts.items()}
        return loss, logits1


class ClampMasks:
    """Callback: project the soft masks back into [0, 1] after every step."""

    def on_step_end(self, step: int, model: MaskedModel) -> None:
        with torch.no_grad():
            for v in model.values:
                v.clamp_(0, 1)


@torch.no_grad()
def percentile_init(importance: dict[str, torch.Tensor], tau: float) -> dict[str, torch.Tensor]:
    """C = clip(s / P_{100 - tau}(s), 0, 1) per unit: the top tau% of each layer start at 1, the rest
    scaled by their importance. tau = 0 divides by the maximum (the paper's collapsing "full scaling")."""
    out = {}
    for u, s in importance.items():
        flat = s.flatten().float()
        k = min(flat.numel(), max(1, round((1 - tau / 100) * flat.numel())))
        q = flat.kthvalue(k).values.clamp_min(1e-12)
        out[u] = (s / q).clamp(0, 1)
    return out


def mask_space(
    model: nn.Module, granularity: str, layers, exclude, example: torch.Tensor | None
) -> MaskSpace:
    if granularity == "weight":
        return MaskSpace.weights(model, layers, exclude)
    if example is None:
        raise ConfigError("channel C-SAM needs an example input: give the stage training data")
    return MaskSpace.channels(model, example, exclude)


@register_stage("csam", CSAMConfig)
def csam(model: nn.Module, cfg: CSAMConfig, ctx: StageContext) -> nn.Module:
    """Pre-train on transformed data, search soft masks with frozen weights, binarise, fine-tune."""
    from robustcompress.certification.transforms import make_family
    from robustcompress.training import make_objective

    if ctx.data is None or len(ctx.data.train) == 0:
        raise ConfigError("the csam stage trains and needs training data")
    model.to(ctx.device)
    seed = ctx.seed if cfg.seed is None else cfg.seed
    gen = torch.Generator(ctx.device).manual_seed(seed)
    family = make_family(cfg.transforms)
    scope = cfg.scope or ("global" if cfg.granularity == "weight" else "layer")
    if cfg.granularity == "channel" and scope == "global":
        raise ConfigError("csam: channel masks are binarised per layer group; drop scope = 'global'")
    example = ctx.data.train.x[:1].to(ctx.device)
    weight_objective = Augmented(
        make_objective(cfg.objective, **cfg.objective_params), family, cfg.augment_prob, gen
    )

    if cfg.pretrain_epochs:
        ctx.log(f"csam: pre-training {cfg.pretrain_epochs} epochs on data transformed by {family.describe()}")
        pretrain = phase_config(ctx.train, cfg, cfg.pretrain_epochs, restore_best=True)
        fit_phase(model, ctx, pretrain, weight_objective, seed=seed)

    space = mask_space(model, cfg.granularity, cfg.layers, cfg.exclude, example)
    importance = space.importance(model)
    init = percentile_init(importance, cfg.tau)

    def hard_in_eval(values: dict[str, torch.Tensor], training: bool) -> dict[str, torch.Tensor]:
        soft = {u: v.clamp(0, 1) for u, v in values.items()}
        return soft if training else space.binarise(soft, cfg.amount, scope, importance)

    masked = MaskedModel(model, space, init, hard_in_eval, frozen_statistics=True)
    if cfg.search_epochs:
        ctx.log(f"csam: mask search {cfg.search_epochs} epochs over {cfg.granularity} masks (weights frozen)")
        search = phase_config(
            ctx.train,
            cfg,
            cfg.search_epochs,
            optimizer="adam",
            lr=cfg.mask_lr,
            weight_decay=0.0,
            restore_best=False,
            objective="ce",
            objective_params={},
            augment=[],
        )
        loss = CSAMLoss(cfg, family.sample, cfg.amount, scope, gen, importance)
        fit_phase(masked, ctx, search, loss, seed=seed, callbacks=[ClampMasks()])
        ctx.log("csam: last losses " + ", ".join(f"{k} {v:.4f}" for k, v in loss.last.items()))
    soft = {u: v.detach().clamp(0, 1) for u, v in masked.current().items()}
    binary = space.binarise(soft, cfg.amount, scope, importance)  # masks stuck at 1: larger importance wins
    model = masked.release()
    space.prune(model, binary)

    if cfg.finetune_epochs:
        ctx.log(f"csam: fine-tuning {cfg.finetune_epochs} epochs with the masks fixed")
        tune = phase_config(ctx.train, cfg, cfg.finetune_epochs, restore_best=True)
        fit_phase(model, ctx, tune, weight_objective, seed=seed + 1)
    if cfg.granularity == "channel":
        harden(model, example)
    ctx.log(pruning_summary(model, "global" if cfg.granularity == "weight" else "channel", cfg.amount))
    return model.eval()
