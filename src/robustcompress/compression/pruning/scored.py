"""Learned masks over weights or channels, without touching the model: HYDRA's scores, C-SAM's soft masks.

A `MaskSpace` says what a mask value multiplies: one value per weight of each prunable layer
("weight"), or one per channel class of the dependency graph ("channel": the class's producer
rows, batch-norm scales and shifts and depthwise filters all scale together, so a value of 0 is
exactly the channel pruning of structured.py and 1 leaves the channel as it is).
`MaskedModel` runs the unchanged model with those multipliers through `torch.func.functional_call`,
so the learned values are its only parameters and the model needs no special layers. When the
search is over, `MaskSpace.binarise` keeps exactly the requested share and `MaskSpace.prune`
applies ordinary pruning masks: the result is the same kind of model the `prune` stage leaves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from robustcompress.compression.layers import matches_any
from robustcompress.compression.pruning.graph import DependencyGraph
from robustcompress.compression.pruning.importance import channel_importance
from robustcompress.compression.pruning.masks import apply_masks
from robustcompress.compression.pruning.structured import channel_masks
from robustcompress.compression.pruning.unstructured import prunable_layers
from robustcompress.errors import ConfigError

MaskFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def leaf_name(model: nn.Module, module_name: str, param: str) -> str:
    """The name functional_call must replace for `module.param`: the original under a pruning mask."""
    module = model.get_submodule(module_name)
    prefix = f"{module_name}." if module_name else ""
    if parametrize.is_parametrized(module, param):
        return f"{prefix}parametrizations.{param}.original"
    return f"{prefix}{param}"


def removed_count(amount: float, n: int, keep_one: bool = False) -> int:
    """How many of n entries a sparsity `amount` removes (round half up, as the prune stage)."""
    k = min(n, math.floor(amount * n + 0.5))
    return min(k, n - 1) if keep_one else k


def keep_mask(values: torch.Tensor, n_remove: int, tiebreak: torch.Tensor | None = None) -> torch.Tensor:
    """0/1 tensor shaped like `values` with exactly its `n_remove` smallest entries 0.

    Equal values are ordered by `tiebreak` (smallest removed first), then by position.
    """
    flat = values.detach().flatten()
    mask = torch.ones_like(flat)
    if n_remove > 0:
        if tiebreak is None:
            order = torch.argsort(flat, stable=True)
        else:
            by_tie = torch.argsort(tiebreak.detach().flatten().to(flat.device), stable=True)
            order = by_tie[torch.argsort(flat[by_tie], stable=True)]
        mask[order[:n_remove]] = 0
    return mask.view_as(values)


def straight_through(values: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """`hard` in the forward pass, the identity to `values` in the backward pass."""
    return values + (hard - values).detach()


@dataclass
class _Leaf:
    name: str  # functional_call name of the tensor
    unit: str | None  # weights: the unit it belongs to; channels: None (uses the channel index)
    index: torch.Tensor | None = None  # channels: output position -> slot in the flat channel vector


class MaskSpace:
    """The units a mask is made of and the tensors each unit multiplies."""

    def __init__(self, granularity: str, shapes: dict[str, tuple[int, ...]], leaves: list[_Leaf]):
        self.granularity = granularity
        self.shapes = shapes  # unit name -> shape of its mask tensor
        self.leaves = leaves
        self.graph: DependencyGraph | None = None
        self.roots: dict[str, list[int]] = {}  # channels: unit -> class roots, in slot order

    @property
    def units(self) -> list[str]:
        return list(self.shapes)

    @classmethod
    def weights(cls, model: nn.Module, layers=("conv", "linear"), exclude=()) -> MaskSpace:
        """One mask value per weight of every prunable conv / linear layer."""
        names = prunable_layers(model, layers, exclude=exclude)
        shapes = {n: tuple(model.get_submodule(n).weight.shape) for n in names}
        return cls("weight", shapes, [_Leaf(leaf_name(model, n, "weight"), n) for n in names])

    @classmethod
    def channels(cls, model: nn.Module, example_input: torch.Tensor, exclude=()) -> MaskSpace:
        """One mask value per prunable channel class; a unit is a group of coupled layers."""
        graph = DependencyGraph.build(model, example_input)
        exclude = list(exclude)
        groups = {
            key: classes
            for key, classes in graph.layer_groups().items()
            if not any(matches_any(n, exclude) for n in key)
        }
        if not groups:
            raise ConfigError("no prunable channel groups left: check 'exclude'")
        slot, slots, shapes, roots = 1, {}, {}, {}
        for key, classes in groups.items():
            unit = "+".join(key)
            shapes[unit] = (len(classes),)
            roots[unit] = [c.root for c in classes]
            for c in classes:
                slots[c.root] = slot
                slot += 1
        leaves = []
        device = next(model.parameters()).device
        for use in graph.layers.values():
            if use.kind not in ("conv", "linear", "depthwise", "norm"):
                continue
            index = torch.tensor([slots.get(graph.find(e), 0) for e in use.out_ids], device=device)
            if not bool(index.any()):
                continue
            for param in ("weight", "bias"):
                if getattr(use.module, param, None) is not None:
                    leaves.append(_Leaf(leaf_name(model, use.name, param), None, index))
        space = cls("channel", shapes, leaves)
        space.graph, space.roots = graph, roots
        return space

    # -- values ---------------------------------------------------------------------------------
    @torch.no_grad()
    def importance(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """|w| per weight, or the L1 norm of each channel class's filters (float32, on the model's device)."""
        device = next(model.parameters()).device
        if self.granularity == "weight":
            return {u: model.get_submodule(u).weight.detach().abs().float() for u in self.units}
        classes = {c.root: c for c in self.graph.classes()}
        return {
            u: channel_importance(self.graph, [classes[r] for r in roots], "l1").float().to(device)
            for u, roots in self.roots.items()
        }

    def multipliers(self, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """functional_call name -> multiplier (broadcastable to the tensor) for the masks of every unit."""
        if self.granularity == "weight":
            return {leaf.name: masks[leaf.unit] for leaf in self.leaves}
        first = next(iter(masks.values()))
        flat = torch.cat(
            [torch.ones(1, device=first.device, dtype=first.dtype)] + [masks[u] for u in self.units]
        )
        out = {}
        for leaf in self.leaves:
            out[leaf.name] = flat[leaf.index]
        return out

    def binarise(
        self,
        values: dict[str, torch.Tensor],
        amount: float,
        scope: str,
        tiebreak: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """0/1 masks keeping the largest values: exactly round(amount * n) zeros over all weights
        (scope "global") or in every unit (scope "layer"); channel groups keep at least one channel.
        Equal values are decided by `tiebreak` (e.g. the importance the masks started from)."""
        if scope == "layer" or self.granularity == "channel":
            keep_one = self.granularity == "channel"
            return {
                u: keep_mask(v, removed_count(amount, v.numel(), keep_one), tiebreak and tiebreak[u])
                for u, v in values.items()
            }
        flat = torch.cat([v.detach().flatten().float() for v in values.values()])
        ties = torch.cat([tiebreak[u].flatten().float() for u in values]) if tiebreak else None
        keep = keep_mask(flat, removed_count(amount, flat.numel()), ties)
        out, offset = {}, 0
        for u, v in values.items():
            out[u] = keep[offset : offset + v.numel()].view_as(v).to(v.dtype)
            offset += v.numel()
        return out

    @torch.no_grad()
    def prune(self, model: nn.Module, binary: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Apply `binary` to `model` as ordinary pruning masks (the prune stage's kind); returns them."""
        if self.granularity == "weight":
            masks = {f"{u}.weight": m for u, m in binary.items()}
        else:
            removed = {
                r for u, m in binary.items() for r, keep in zip(self.roots[u], m.tolist()) if keep == 0
            }
            masks = channel_masks(self.graph, removed)
        apply_masks(model, masks)
        return masks


class MaskedModel(nn.Module):
    """`model` run with learned mask multipliers; the mask parameters are its only trainable ones.

    `mask_fn(values)` turns the raw parameters into the multipliers of an ordinary forward pass
    (HYDRA: a straight-through top-k; C-SAM: the soft mask in training, the binarised one in eval
    mode); `forward(x, masks)` runs with explicit multipliers instead (mask samples of C-SAM).
    With `frozen_statistics` the model stays in eval mode (batch-norm running statistics unchanged).
    """

    def __init__(
        self,
        model: nn.Module,
        space: MaskSpace,
        init: dict[str, torch.Tensor],
        mask_fn: Callable[[dict[str, torch.Tensor], bool], dict[str, torch.Tensor]],
        frozen_statistics: bool = False,
    ):
        super().__init__()
        self.model, self.space, self.mask_fn, self.frozen_statistics = (
            model,
            space,
            mask_fn,
            frozen_statistics,
        )
        for p in model.parameters():
            p.requires_grad_(False)
        self.values = nn.ParameterList([nn.Parameter(init[u].detach().clone().float()) for u in space.units])

    def current(self) -> dict[str, torch.Tensor]:
        """The raw parameters by unit name."""
        return dict(zip(self.space.units, self.values))

    def forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if masks is None:
            masks = self.mask_fn(self.current(), self.training)
        params = dict(self.model.named_parameters())
        subs = {name: params[name] * m for name, m in self._shaped(self.space.multipliers(masks)).items()}
        return functional_call(self.model, subs, (x,), strict=False)

    def _shaped(self, multipliers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.space.granularity == "weight":
            return multipliers
        params = dict(self.model.named_parameters())
        return {n: m.view(-1, *([1] * (params[n].dim() - 1))) for n, m in multipliers.items()}

    def train(self, mode: bool = True) -> MaskedModel:
        super().train(mode)
        if self.frozen_statistics:
            self.model.eval()
        return self

    def release(self) -> nn.Module:
        """The inner model with its parameters trainable again."""
        for p in self.model.parameters():
            p.requires_grad_(True)
        return self.model
