"""Pruning masks as parametrizations: `weight = original * mask`, so pruned weights stay exactly zero.

The mask is a buffer, not a parameter: no optimiser can touch it. The original tensor is zeroed
where the mask is zero too, so its gradient (masked by the product), momentum and weight decay
all stay zero there; whatever the optimiser does, the effective weight is zero.

Convention shared with clustering and quantization: after `bake_masks`, an exact zero in a
weight means "pruned"; later stages keep zeros zero.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from robustcompress.compression.structure import register_structure, replace_structure


class PruningMask(nn.Module):
    """The parametrization: multiplies a tensor by a fixed 0/1 mask of the same shape."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().to(torch.float32))

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.mask.to(tensor.dtype)

    @torch.no_grad()
    def constrain_(self, original: torch.Tensor) -> None:
        """Zero the pruned entries of the stored tensor (training calls this after optimiser steps)."""
        original.mul_(self.mask.to(original.dtype))


def _split(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def mask_of(module: nn.Module, param: str) -> PruningMask | None:
    """The PruningMask on `module.param`, or None."""
    if not parametrize.is_parametrized(module, param):
        return None
    for p in module.parametrizations[param]:
        if isinstance(p, PruningMask):
            return p
    return None


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor], record: bool = True) -> nn.Module:
    """Mask `model` in place. `masks` maps "module.param" (e.g. "net.fc.weight") to 0/1 tensors.

    A tensor that already has a mask gets the product of old and new (pruning never revives a
    weight). The original tensor is zeroed where the mask is zero.
    """
    for name, mask in masks.items():
        module_name, param = _split(name)
        module = model.get_submodule(module_name)
        current = getattr(module, param)
        if mask.shape != current.shape:
            raise ValueError(
                f"mask for {name} has shape {tuple(mask.shape)}, the tensor {tuple(current.shape)}"
            )
        mask = (mask != 0).to(device=current.device, dtype=torch.float32)
        existing = mask_of(module, param)
        if existing is not None:
            existing.mask.mul_(mask)
            mask = existing.mask
        else:
            parametrize.register_parametrization(module, param, PruningMask(mask), unsafe=False)
        original = module.parametrizations[param].original
        original.mul_(mask.to(original.dtype))
    if record and masks:
        replace_structure(model, "prune_masks", names=sorted(masks_of(model)))
    return model


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every mask in `model`: {"module.param": 0/1 float tensor} (the live buffers)."""
    out = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for param in module.parametrizations:
            m = mask_of(module, param)
            if m is not None:
                out[f"{module_name}.{param}" if module_name else param] = m.mask
    return out


def is_masked(model: nn.Module) -> bool:
    return bool(masks_of(model))


@torch.no_grad()
def bake_masks(model: nn.Module, record: bool = True) -> nn.Module:
    """Remove the parametrizations, leaving plain tensors whose pruned entries are exact zeros."""
    baked = False
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for param in list(module.parametrizations):
            if mask_of(module, param) is None:
                continue
            if len(module.parametrizations[param]) > 1:
                raise ValueError(
                    f"{type(module).__name__}.{param} carries other parametrizations than the pruning mask; "
                    "remove them before baking the mask"
                )
            parametrize.remove_parametrizations(module, param, leave_parametrized=True)
            baked = True
    if record and baked:
        replace_structure(model, "prune_baked")
    return model


def register_mask_slots(model: nn.Module, names: list[str]) -> nn.Module:
    """Give each "module.param" an all-ones mask (checkpoint replay: the state dict fills them)."""
    for name in names:
        module_name, param = _split(name)
        module = model.get_submodule(module_name)
        if mask_of(module, param) is None:
            parametrize.register_parametrization(
                module, param, PruningMask(torch.ones_like(getattr(module, param)))
            )
    return model


@register_structure("prune_masks")
def _replay_masks(model: nn.Module, params: dict) -> nn.Module:
    """Mask slots on the "module.param" tensors named; the state dict fills them."""
    return register_mask_slots(model, list(params["names"]))


@register_structure("prune_baked")
def _replay_baked(model: nn.Module, params: dict) -> nn.Module:
    return bake_masks(model, record=False)
