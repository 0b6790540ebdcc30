"""Unstructured magnitude pruning: global (paper 002 Alg. 1) and layer-wise (Alg. 2).

Global: one magnitude threshold over all prunable weights, so exactly round(amount * N) of them
are zero afterwards. Layer-wise: round(amount * n_l) of each layer's weights. Ties are broken by
position, so counts are exact. Weights that are already zero count as pruned (sparsity only grows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from robustcompress.compression.layers import matches_any
from robustcompress.compression.pruning.masks import apply_masks
from robustcompress.errors import ConfigError

LAYER_TYPES = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,)}


def prunable_layers(
    model: nn.Module,
    layers: Iterable[str] = ("conv", "linear"),
    keep_first: bool = False,
    keep_last: bool = False,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Names of the layers to prune, in model order: conv and/or linear, minus the excluded ones.

    `keep_first` / `keep_last` leave the first / last such layer dense (the input and classifier
    layers are small and sensitive); `exclude` holds fnmatch patterns of module names.
    """
    kinds = list(layers)
    unknown = [k for k in kinds if k not in LAYER_TYPES]
    if unknown:
        raise ConfigError(f"unknown prunable layer type(s) {unknown}; choose from {sorted(LAYER_TYPES)}")
    types = tuple(t for k in kinds for t in LAYER_TYPES[k])
    all_layers = [
        n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES["conv"] + LAYER_TYPES["linear"])
    ]
    names = [n for n, m in model.named_modules() if isinstance(m, types)]
    if keep_first and all_layers and all_layers[0] in names:
        names.remove(all_layers[0])
    if keep_last and all_layers and all_layers[-1] in names:
        names.remove(all_layers[-1])
    exclude = list(exclude)
    names = [n for n in names if not matches_any(n, exclude)]
    if not names:
        raise ConfigError("no prunable layers left: check 'layers', 'exclude', 'keep_first' and 'keep_last'")
    return names


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A 0/1 mask (1 = keep) with exactly the k smallest entries zeroed (stable ties)."""
    mask = torch.ones(scores.numel(), dtype=torch.float32, device=scores.device)
    if k > 0:
        order = torch.argsort(scores.flatten(), stable=True)
        mask[order[:k]] = 0
    return mask.view_as(scores)


def _count(amount: float, n: int) -> int:
    return min(n, math.floor(amount * n + 0.5))


@torch.no_grad()
def magnitude_masks(
    model: nn.Module,
    names: list[str],
    amount: float,
    method: str = "global",
    overrides: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks ("layer.weight" -> 0/1) pruning `amount` of the weights of `names` by magnitude.

    Layers matched by an `overrides` pattern are pruned layer-wise at their own amount and left
    out of the global pool.
    """
    if method not in ("global", "layerwise"):
        raise ConfigError(f"unknown unstructured method {method!r}; choose 'global' or 'layerwise'")
    overrides = overrides or {}
    weights = {n: model.get_submodule(n).weight.detach() for n in names}
    own = {n: next((a for p, a in overrides.items() if matches_any(n, [p])), None) for n in names}
    masks = {}
    pool = [n for n in names if own[n] is None]
    if method == "layerwise":
        for n in pool:
            masks[f"{n}.weight"] = _smallest(weights[n].abs(), _count(amount, weights[n].numel()))
    elif pool:
        flat = torch.cat([weights[n].abs().flatten().float().cpu() for n in pool])
        keep = _smallest(flat, _count(amount, flat.numel()))
        offset = 0
        for n in pool:
            size = weights[n].numel()
            masks[f"{n}.weight"] = keep[offset : offset + size].view_as(weights[n]).to(weights[n].device)
            offset += size
    for n in names:
        if own[n] is not None:
            masks[f"{n}.weight"] = _smallest(weights[n].abs(), _count(own[n], weights[n].numel()))
    return masks


def prune_unstructured(
    model: nn.Module,
    amount: float,
    method: str = "global",
    layers: Iterable[str] = ("conv", "linear"),
    keep_first: bool = False,
    keep_last: bool = False,
    exclude: Iterable[str] = (),
    overrides: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Mask `model` in place so that `amount` of its prunable weights are zero; returns the masks."""
    names = prunable_layers(model, layers, keep_first, keep_last, exclude)
    masks = magnitude_masks(model, names, amount, method, overrides)
    apply_masks(model, masks)
    return masks
