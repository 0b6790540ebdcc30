"""Bridge to the checkpoint's structure records: register replays, record changes, copy metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from robustcompress.checkpoint import STRUCTURES, add_structure, carry_metadata, structure_of
from robustcompress.models.zoo import STRUCTURE_ATTR

Replay = Callable[[nn.Module, dict[str, Any]], nn.Module]

__all__ = ["add_structure", "carry_metadata", "register_structure", "replace_structure", "structure_of"]


def replace_structure(model: nn.Module, kind: str, **params: Any) -> nn.Module:
    """`add_structure`, replacing a last entry of the same kind: repeated masking leaves one entry."""
    entries = structure_of(model)
    if entries and entries[-1].get("kind") == kind:
        object.__setattr__(model, STRUCTURE_ATTR, entries[:-1])
    return add_structure(model, kind, **params)


def register_structure(kind: str) -> Callable[[Replay], Replay]:
    """Decorator: `fn(model, params) -> model` redoes a change of kind `kind` on a freshly built model."""

    def add(fn: Replay) -> Replay:
        STRUCTURES.register(kind)(fn)
        return fn

    return add
