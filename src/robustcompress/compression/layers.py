"""Which layers a compression stage touches, and small helpers on parametrized weights."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator

from torch import nn
from torch.nn.utils import parametrize

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_type(module: nn.Module) -> str:
    return "linear" if isinstance(module, nn.Linear) else "conv"


def weighted_layers(
    model: nn.Module, types: tuple[str, ...] = ("conv", "linear")
) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) of every convolution and linear layer of the requested types."""
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED) and layer_type(module) in types:
            yield name, module


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether a layer name is one of `patterns` (fnmatch; an exact name matches even with [ ] * ?)."""
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def parametrizations_of(module: nn.Module, tensor: str = "weight") -> list[nn.Module]:
    if parametrize.is_parametrized(module, tensor):
        return list(module.parametrizations[tensor])
    return []


def bake_parametrizations(module: nn.Module) -> None:
    """Replace every parametrized tensor of `module` by a plain parameter holding its current value.

    Unlike `parametrize.remove_parametrizations`, this never edits the parametrized class that a
    deep copy shares with its original: the instance gets its plain class back.
    """
    if not parametrize.is_parametrized(module):
        return
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    module.__class__ = type(module).__bases__[0]
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value))


def bake_foreign(module: nn.Module, keep: tuple[type, ...]) -> None:
    """Remove parametrizations on `weight` that are not of the `keep` types, leaving their effect.

    Pruning masks (the pruning stage's parametrizations) leave exact zeros, which later stages
    treat as pruned. Only called when every parametrization present is foreign.
    """
    plist = parametrizations_of(module)
    if plist and not any(isinstance(p, keep) for p in plist):
        bake_parametrizations(module)


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child
