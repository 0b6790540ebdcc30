"""Batch-norm folding: conv -> bn pairs become one conv with a bias (as integer inference does)."""

from __future__ import annotations

import torch
from torch import nn

from robustcompress.compression.layers import get_submodule_parent, parametrizations_of


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm fed only by an unparametrized convolution.

    Found by torch.fx tracing; a model that cannot be traced yields no pairs (nothing is folded).
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # untraceable user model: folding is an optimisation, not a requirement
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(
            modules.get(node.target), nn.BatchNorm1d | nn.BatchNorm2d
        ):
            continue
        src = node.args[0]
        if not isinstance(src, torch.fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        conv = modules.get(src.target)
        if isinstance(conv, nn.Conv2d | nn.Linear) and not parametrizations_of(conv):
            pairs.append((src.target, node.target))
    return pairs


@torch.no_grad()
def fold_pair(model: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    factor = gamma / std
    conv.weight.mul_(factor.view(-1, *([1] * (conv.weight.dim() - 1))))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
    new_bias = (bias - bn.running_mean) * factor + beta
    conv.bias = nn.Parameter(new_bias.detach().clone())
    parent, child = get_submodule_parent(model, bn_name)
    setattr(parent, child, nn.Identity())


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every foldable batch norm into its convolution, in place; returns the folded pairs."""
    pairs = find_conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        fold_pair(model, conv_name, bn_name)
    return pairs


def replay_folded(model: nn.Module, pairs: list[list[str]]) -> nn.Module:
    """Give each conv a bias and replace each bn by Identity (weights come from the checkpoint)."""
    for conv_name, bn_name in pairs:
        conv = model.get_submodule(conv_name)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], device=conv.weight.device))
        parent, child = get_submodule_parent(model, bn_name)
        setattr(parent, child, nn.Identity())
    return model
