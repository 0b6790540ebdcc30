"""Structured channel pruning (paper 002 Alg. 3, paper 003 sec. 3.1) and hardening (paper 002 Alg. 4).

`prune_channels` zeroes whole channel classes through masks: the producers' filters and biases,
the batch-norm scales and shifts, depthwise filters, and the consumers' input columns. A zeroed
class then carries exact zeros through the network, so `harden` can cut it out physically and the
smaller model computes the same outputs as the masked one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from robustcompress.compression.layers import matches_any
from robustcompress.compression.pruning.graph import ChannelClass, DependencyGraph
from robustcompress.compression.pruning.importance import channel_importance
from robustcompress.compression.pruning.masks import apply_masks, bake_masks, is_masked
from robustcompress.compression.structure import add_structure, register_structure
from robustcompress.errors import UnsupportedModelError


def example_input_for(model: nn.Module, batch: int = 1) -> torch.Tensor:
    """A zero image of the model's input shape, read from its ModelSpec (zoo and checkpoint models)."""
    spec = getattr(model, "_rc_spec", None)
    if not spec:
        raise UnsupportedModelError(
            f"{type(model).__name__} carries no ModelSpec, so its input shape is unknown; "
            "pass example_input=torch.zeros(1, C, H, W) to the pruning function"
        )
    device = next(model.parameters()).device
    size = spec.get("input_size", 32)
    return torch.zeros(batch, spec.get("in_channels", 3), size, size, device=device)


def _keep_count(n: int, amount: float, round_to: int) -> int:
    keep = n - math.floor(amount * n + 0.5)
    if round_to > 1:
        keep = round_to * max(1, math.floor(keep / round_to + 0.5))
    return min(n, max(1, keep))


def select_channels(
    graph: DependencyGraph,
    amount: float,
    importance: str = "l1",
    scope: str = "layer",
    round_to: int = 1,
    overrides: dict[str, float] | None = None,
    exclude: Iterable[str] = (),
    seed: int = 0,
) -> set[int]:
    """The channel classes (roots) to remove.

    scope "layer": every group of coupled layers loses `amount` of its channels (Algorithm 3).
    scope "global": one threshold over scores normalised by their group's mean.
    `overrides` maps layer-name patterns (fnmatch) to their own amount; groups containing an
    `exclude`d layer keep all their channels. `round_to` keeps each group's width a multiple of it.
    """
    overrides = overrides or {}
    exclude = list(exclude)
    groups = graph.layer_groups()
    every = [c for classes in groups.values() for c in classes]
    score_of = dict(zip((c.root for c in every), channel_importance(graph, every, importance, seed).tolist()))
    chosen: set[int] = set()
    pool: list[tuple[float, int, tuple[str, ...]]] = []
    for key, classes in groups.items():
        if any(matches_any(name, exclude) for name in key):
            continue
        scores = torch.tensor([score_of[c.root] for c in classes], dtype=torch.float64)
        group_amount = next((a for p, a in overrides.items() for name in key if matches_any(name, [p])), None)
        if scope == "layer" or group_amount is not None:
            keep = _keep_count(len(classes), amount if group_amount is None else group_amount, round_to)
            order = torch.argsort(scores, stable=True)
            chosen.update(classes[i].root for i in order[: len(classes) - keep].tolist())
        else:
            norm = scores / scores.mean().clamp_min(1e-12)
            pool.extend((float(s), c.root, key) for s, c in zip(norm, classes))
    if pool:
        chosen |= _global_choice(pool, groups, amount, round_to)
    return chosen


def _global_choice(pool, groups, amount: float, round_to: int) -> set[int]:
    n_remove = math.floor(amount * len(pool) + 0.5)
    pool.sort(key=lambda t: t[0])
    removed: dict[tuple[str, ...], list[int]] = {}
    for _, root, key in pool[:n_remove]:
        removed.setdefault(key, []).append(root)
    chosen = set()
    for key, roots in removed.items():
        n = len(groups[key])
        keep = n - len(roots)
        if round_to > 1:
            keep = min(n, round_to * max(1, math.ceil(keep / round_to)))
        chosen.update(roots[: n - max(1, keep)])
    return chosen


def channel_masks(graph: DependencyGraph, roots: set[int]) -> dict[str, torch.Tensor]:
    """Masks ("module.param" -> 0/1 tensor) that zero every tensor slice of the classes in `roots`."""
    masks: dict[str, torch.Tensor] = {}
    for name, (ins, outs) in graph.positions(roots).items():
        use = graph.layers[name]
        module = use.module
        if use.kind == "fixed":
            continue
        w = torch.ones_like(module.weight)
        if use.kind in ("conv", "linear"):
            w[outs] = 0
            if ins:
                w[:, ins] = 0
        else:  # depthwise, norm: one slice per channel
            w[outs] = 0
        masks[f"{name}.weight"] = w
        if getattr(module, "bias", None) is not None and outs:
            b = torch.ones_like(module.bias)
            b[outs] = 0
            masks[f"{name}.bias"] = b
    return masks


def prune_channels(
    model: nn.Module, amount: float, *, example_input: torch.Tensor | None = None, **choice: Any
) -> set[int]:
    """Mask `amount` of the channels of every prunable layer group (in place); returns the removed roots.

    `choice`: how `select_channels` chooses them (importance, scope, round_to, overrides, exclude, seed).
    """
    example = example_input if example_input is not None else example_input_for(model)
    graph = DependencyGraph.build(model, example)
    roots = select_channels(graph, amount, **choice)
    apply_masks(model, channel_masks(graph, roots))
    return roots


@torch.no_grad()
def _is_zero_class(graph: DependencyGraph, c: ChannelClass, by_layer: dict[str, list[int]]) -> bool:
    for name, positions in by_layer.items():
        use = graph.layers[name]
        m = use.module
        if use.kind in ("conv", "linear", "depthwise", "norm"):
            if use.kind != "depthwise" and m.weight is not None and m.weight[positions].any():
                return False
            if getattr(m, "bias", None) is not None and m.bias[positions].any():
                return False
    return True


@torch.no_grad()
def zero_classes(graph: DependencyGraph) -> set[int]:
    """Prunable classes that are exactly zero in every producer, batch norm and depthwise bias."""
    owners: dict[int, dict[str, list[int]]] = {}
    for use in graph.layers.values():
        if use.kind in ("conv", "linear", "depthwise", "norm"):
            for pos, e in enumerate(use.out_ids):
                owners.setdefault(graph.find(e), {}).setdefault(use.name, []).append(pos)
    return {c.root for c in graph.classes() if _is_zero_class(graph, c, owners[c.root])}


@torch.no_grad()
def harden(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Cut zeroed channel classes out of `model` (in place; masks are baked first). Returns the model.

    The result is a plain nn.Module with smaller Conv / Linear / BatchNorm layers. Only classes
    that are exactly zero everywhere are removed, so outputs do not change.
    """
    example = example_input if example_input is not None else example_input_for(model)
    if is_masked(model):
        bake_masks(model)
    graph = DependencyGraph.build(model, example)
    roots = zero_classes(graph)
    if not roots:
        return model
    shapes = {}
    for name, (ins, outs) in graph.positions(roots).items():
        use = graph.layers[name]
        keep_in = [i for i in range(len(use.in_ids)) if i not in set(ins)]
        keep_out = [i for i in range(len(use.out_ids)) if i not in set(outs)]
        new = _sliced(use.module, use.kind, keep_in, keep_out)
        _set_submodule(model, name, new)
        shapes[name] = _shape_entry(new)
    add_structure(model, "channel_pruned", modules=shapes)
    return model


def _sliced(module: nn.Module, kind: str, keep_in: list[int], keep_out: list[int]) -> nn.Module:
    if kind == "fixed":
        raise UnsupportedModelError(f"cannot cut channels of grouped {type(module).__name__}")
    ki = torch.tensor(keep_in, dtype=torch.long, device=module.weight.device)
    ko = torch.tensor(keep_out, dtype=torch.long, device=module.weight.device)
    if kind == "conv":
        new = resized(module, len(keep_in), len(keep_out), 1)
        new.weight.copy_(module.weight[ko][:, ki])
    elif kind == "depthwise":
        new = resized(module, len(keep_out), len(keep_out), len(keep_out))
        new.weight.copy_(module.weight[ko])
    elif kind == "linear":
        new = resized(module, len(keep_in), len(keep_out))
        new.weight.copy_(module.weight[ko][:, ki])
    else:  # norm
        new = resized(module, len(keep_out), len(keep_out))
        for attr in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, attr, None) is not None:
                getattr(new, attr).copy_(getattr(module, attr)[ko])
        if getattr(module, "num_batches_tracked", None) is not None:
            new.num_batches_tracked.copy_(module.num_batches_tracked)
        new.train(module.training)
        return new
    if module.bias is not None:
        new.bias.copy_(module.bias[ko])
    new.train(module.training)
    return new


def resized(module: nn.Module, n_in: int, n_out: int, groups: int = 1) -> nn.Module:
    """A fresh module configured like `module` with other channel counts (weights uninitialised)."""
    factory = {"device": module.weight.device if module.weight is not None else None}
    if module.weight is not None:
        factory["dtype"] = module.weight.dtype
    if isinstance(module, nn.modules.conv._ConvNd):
        return type(module)(
            n_in, n_out, module.kernel_size, module.stride, module.padding, module.dilation, groups,
            module.bias is not None, module.padding_mode, **factory,
        )  # fmt: skip
    if isinstance(module, nn.Linear):
        return nn.Linear(n_in, n_out, module.bias is not None, **factory)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return type(module)(
            n_out, module.eps, module.momentum, module.affine, module.track_running_stats, **factory
        )
    raise UnsupportedModelError(f"cannot resize {type(module).__name__}")


def _shape_entry(module: nn.Module) -> dict[str, int]:
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"in": module.in_channels, "out": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.Linear):
        return {"in": module.in_features, "out": module.out_features, "groups": 1}
    return {"in": module.num_features, "out": module.num_features, "groups": 1}


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def rebuild_shapes(model: nn.Module, modules: dict[str, dict[str, int]]) -> nn.Module:
    """Replay of a "channel_pruned" structure entry: give the listed layers their hardened shapes."""
    if is_masked(model):
        bake_masks(model, record=False)
    for name, shape in modules.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise UnsupportedModelError(f"hardened layer {name!r} is not in the rebuilt model") from None
        new = resized(old, shape["in"], shape["out"], shape.get("groups", 1))
        _set_submodule(model, name, new)
    return model


@register_structure("channel_pruned")
def _replay_channels(model: nn.Module, params: dict) -> nn.Module:
    return rebuild_shapes(model, params["modules"])
