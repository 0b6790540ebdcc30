"""Checkpoint replay of pruning: rebuild masks and hardened shapes before the weights are loaded.

Entries (see robustcompress.checkpoint.add_structure):
- "prune_masks" {names}: mask slots on these "module.param" tensors (the state dict fills them)
- "prune_baked" {}: masks removed, zeros left in the weights
- "channel_pruned" {modules: {name: {in, out, groups}}}: layers rebuilt at their hardened sizes
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robustcompress.compression.pruning.masks import bake_masks, register_mask_slots
from robustcompress.compression.pruning.structured import rebuild_shapes


def replay_masks(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return register_mask_slots(model, list(params["names"]))


def replay_baked(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return bake_masks(model, record=False)


def replay_channels(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return rebuild_shapes(model, params["modules"])


REPLAYS = {"prune_masks": replay_masks, "prune_baked": replay_baked, "channel_pruned": replay_channels}


def register_structures() -> None:
    """Add the replays to robustcompress.checkpoint.STRUCTURES (when checkpoints are available)."""
    try:
        from robustcompress.checkpoint import STRUCTURES
    except ImportError:
        return
    for kind, fn in REPLAYS.items():
        if kind not in STRUCTURES:
            STRUCTURES.register(kind)(fn)
