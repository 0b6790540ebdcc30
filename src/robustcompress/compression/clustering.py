"""Weight clustering (weight sharing) with cluster-preserving training.

Each layer's weights (or each output channel's) are grouped by 1-D k-means into K centroids; the
layer then stores only a codebook and one index per weight (paper 002, Algorithm 6; Deep
Compression). After clustering, the weight is a `torch.nn.utils.parametrize` parametrization whose
trainable original is the codebook and whose fixed buffer is the index map:

    weight = table[index], table = [0, c_1, ..., c_K]   (index 0 = pruned, kept exactly zero)

Gradients reach the centroids (summed over each centroid's members) and the assignments never
change, so fine-tuning never adds new values: a clustered layer holds at most K non-zero values.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from robustcompress.compression.layers import (
    bake_foreign,
    layer_type,
    matches_any,
    parametrizations_of,
    weighted_layers,
)
from robustcompress.compression.storage import WeightStorage, weight_storage
from robustcompress.compression.structure import add_structure, register_structure
from robustcompress.errors import ConfigError
from robustcompress.stages import StageContext, register_stage
from robustcompress.training.finetune import PAPER000, FinetuneSpec, finetune_config, finetune_model

Init = Literal["linear", "density", "kmeans++", "random"]


class ClusteredWeight(nn.Module):
    """Parametrization: codebook (groups, K) + fixed index map -> dense weight.

    `index` has the weight's shape; 0 marks a pruned weight (always zero), 1..K a centroid of the
    weight's group (group = output channel when per-channel, else the whole tensor).
    """

    def __init__(self, index: torch.Tensor, codebook: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index.to(torch.int64))
        self._init_codebook = codebook.detach().clone()

    @property
    def groups(self) -> int:
        return self._init_codebook.shape[0]

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        table = F.pad(codebook, (1, 0))  # column 0 is the pruned value, exactly 0, without gradient
        groups = codebook.shape[0]
        flat = table.gather(1, self.index.reshape(groups, -1))
        return flat.reshape(self.index.shape)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self._init_codebook.to(weight.device, weight.dtype)

    def storage(self) -> WeightStorage:
        """Stored as one index of cluster_bits(K) bits per weight plus the (groups, K) codebook."""
        groups, k = self._init_codebook.shape
        return WeightStorage(index_bits=cluster_bits(k), table_size=groups * k, groups=groups)


def is_clustered(module: nn.Module) -> bool:
    return any(isinstance(p, ClusteredWeight) for p in parametrizations_of(module))


def clustered_parametrization(module: nn.Module) -> ClusteredWeight | None:
    return next((p for p in parametrizations_of(module) if isinstance(p, ClusteredWeight)), None)


# ---------------------------------------------------------------------------------------------
# 1-D k-means


def _init_centroids(values: torch.Tensor, k: int, init: str, gen: torch.Generator) -> torch.Tensor:
    """k initial centroids for the 1-D sample `values` (non-empty)."""
    if init == "linear":  # Deep Compression's default: evenly spaced over [min, max]
        return torch.linspace(values.min().item(), values.max().item(), k, dtype=values.dtype)
    if init == "density":  # evenly spaced in the cumulative distribution
        q = torch.linspace(0, 1, k, dtype=torch.float64)
        sorted_v = values.sort().values.double()
        pos = q * (len(sorted_v) - 1)
        return sorted_v[pos.round().long()].to(values.dtype)
    if init == "random":
        pick = torch.randint(len(values), (k,), generator=gen)
        return values[pick].clone()
    if init == "kmeans++":
        centroids = [values[torch.randint(len(values), (1,), generator=gen)].item()]
        d2 = (values - centroids[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            if total <= 0:
                centroids.append(values[torch.randint(len(values), (1,), generator=gen)].item())
            else:
                centroids.append(values[torch.multinomial(d2 / total, 1, generator=gen)].item())
            d2 = torch.minimum(d2, (values - centroids[-1]) ** 2)
        return torch.tensor(centroids, dtype=values.dtype)
    raise ConfigError(f"unknown centroid init {init!r}; choose linear, density, kmeans++ or random")


def kmeans_1d(
    values: torch.Tensor, mask: torch.Tensor, k: int, init: str = "linear", iters: int = 30, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each row of `values` (groups, n), counting only entries where `mask` is True.

    Returns (centroids (groups, k) sorted ascending, assignment (groups, n) in [0, k)).
    Vectorised over rows: assignment by searchsorted on the midpoints of sorted centroids.
    """
    gen = torch.Generator().manual_seed(seed)
    values = values.detach().float().cpu()
    mask = mask.cpu()
    groups = values.shape[0]
    centroids = torch.zeros(groups, k)
    for g in range(groups):
        sample = values[g][mask[g]]
        if len(sample):
            centroids[g] = _init_centroids(sample, k, init, gen)
    weights = mask.float()
    for _ in range(iters):
        centroids = centroids.sort(dim=1).values
        bounds = (centroids[:, 1:] + centroids[:, :-1]) / 2
        assign = torch.searchsorted(bounds.contiguous(), values.contiguous())
        sums = torch.zeros(groups, k).scatter_add_(1, assign, values * weights)
        counts = torch.zeros(groups, k).scatter_add_(1, assign, weights)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.allclose(new, centroids, atol=1e-9, rtol=0):
            centroids = new
            break
        centroids = new
    centroids = centroids.sort(dim=1).values
    bounds = (centroids[:, 1:] + centroids[:, :-1]) / 2
    assign = torch.searchsorted(bounds.contiguous(), values.contiguous())
    return centroids, assign


# ---------------------------------------------------------------------------------------------
# applying clustering to a layer


def cluster_layer(
    module: nn.Module,
    clusters: int,
    init: str = "linear",
    per_channel: bool = False,
    preserve_sparsity: bool = True,
    seed: int = 0,
) -> ClusteredWeight:
    """Replace `module.weight` by a clustered parametrization with `clusters` centroids per group."""
    if weight_storage(module).compressed:  # clustered or quantized already
        raise ConfigError("layer is already clustered or quantized; cluster before ptq/qat, and only once")
    bake_foreign(module, keep=())
    weight = module.weight.detach()
    groups = weight.shape[0] if per_channel else 1
    values = weight.reshape(groups, -1).float().cpu()
    keep = values != 0 if preserve_sparsity else torch.ones_like(values, dtype=torch.bool)
    centroids, assign = kmeans_1d(values, keep, clusters, init=init, seed=seed)
    index = torch.where(keep, assign + 1, torch.zeros_like(assign)).reshape(weight.shape)
    param = ClusteredWeight(index.to(weight.device), centroids.to(weight.device, weight.dtype))
    parametrize.register_parametrization(module, "weight", param, unsafe=True)
    return param


class ClusterConfig(FinetuneSpec):
    """Weight clustering: K = `clusters`, else 2**`bits`; per-type bits override both.

    Cluster-preserving fine-tuning follows paper 000 (Adam, constant lr 1e-4, patience 5) unless
    the fine-tuning fields say otherwise; `finetune_epochs` and `skip` are the old names of
    `epochs` and `exclude`.
    """

    clusters: int | None = Field(None, ge=2, le=65536, description="number of centroids per group")
    bits: int | None = Field(None, ge=1, le=16, description="2**bits centroids per group")
    conv_bits: int | None = Field(None, ge=1, le=16, description="bits for convolutions (paper 002: 8)")
    linear_bits: int | None = Field(None, ge=1, le=16, description="bits for linear layers (paper 002: 5)")
    init: Init = "linear"
    per_channel: bool = False
    preserve_sparsity: bool = True
    layers: list[Literal["conv", "linear"]] = ["conv", "linear"]
    exclude: list[str] = Field(
        default_factory=list, description="fnmatch patterns of layers to leave unclustered"
    )
    min_weights: int = Field(64, ge=0, description="leave layers with fewer weights unclustered")
    epochs: int = Field(0, ge=0, description="cluster-preserving fine-tuning epochs")
    lr: float = Field(1e-4, gt=0)
    patience: int | None = Field(5, ge=1)

    OLD_NAMES: ClassVar[dict[str, str]] = {"epochs": "finetune_epochs", "exclude": "skip"}
    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = (
        "objective", "objective_params", "optimizer", "momentum", "weight_decay", "schedule",
        "max_steps_per_epoch", "sam_rho",
    )  # fmt: skip

    def clusters_for(self, kind: str) -> int | None:
        per_type = self.conv_bits if kind == "conv" else self.linear_bits
        if per_type is not None:
            return 2**per_type
        if self.clusters is not None:
            return self.clusters
        if self.bits is not None:
            return 2**self.bits
        return 16 if self.conv_bits is None and self.linear_bits is None else None  # paper 000: 16


def cluster_model(model: nn.Module, cfg: ClusterConfig, seed: int = 0) -> dict[str, dict]:
    """Cluster every selected layer in place; returns {layer name: {"groups", "clusters"}}."""
    done: dict[str, dict] = {}
    for name, module in weighted_layers(model, tuple(cfg.layers)):
        k = cfg.clusters_for(layer_type(module))
        if k is None or matches_any(name, cfg.exclude) or module.weight.numel() < max(cfg.min_weights, 1):
            continue
        p = cluster_layer(module, k, cfg.init, cfg.per_channel, cfg.preserve_sparsity, seed)
        done[name] = {"groups": p.groups, "clusters": k}
    if not done:
        raise ConfigError(
            "cluster stage found no layer to cluster; check `layers`, `exclude` and `min_weights`"
        )
    return done


@register_stage("cluster", ClusterConfig)
def cluster_stage(model: nn.Module, cfg: ClusterConfig, ctx: StageContext) -> nn.Module:
    layers = cluster_model(model, cfg, seed=ctx.seed)
    add_structure(model, "clustered", layers=layers)
    ctx.log(f"clustered {len(layers)} layers ({cfg.init} init)")
    if cfg.epochs:
        finetune_model(
            model, ctx, finetune_config(ctx.train, cfg, PAPER000), "cluster-preserving fine-tuning"
        )
    return model


@register_structure("clustered")
def _replay_clustered(model: nn.Module, params: dict) -> nn.Module:
    for name, info in params["layers"].items():
        module = model.get_submodule(name)
        bake_foreign(module, keep=())
        w = module.weight.detach()
        index = torch.zeros(w.shape, dtype=torch.int64, device=w.device)
        codebook = torch.zeros(info["groups"], info["clusters"], dtype=w.dtype, device=w.device)
        parametrize.register_parametrization(module, "weight", ClusteredWeight(index, codebook), unsafe=True)
    return model


def cluster_bits(clusters: int) -> int:
    """Index width needed for `clusters` centroids (paper 002's n)."""
    return max(1, math.ceil(math.log2(clusters)))
