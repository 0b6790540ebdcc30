"""Record structural changes on a model so checkpoints can replay them (see robustcompress.checkpoint)."""

from __future__ import annotations

from typing import Any

from torch import nn

STRUCTURE_ATTR = "_rc_structure"  # as robustcompress.models.zoo.STRUCTURE_ATTR


def record_structure(model: nn.Module, kind: str, replace_same: bool = True, **params: Any) -> None:
    """`add_structure(model, kind, **params)`; with `replace_same`, replaces a last entry of the same kind.

    Repeated masking (iterative pruning) thus leaves one "prune_masks" entry, not one per step.
    """
    entries = list(getattr(model, STRUCTURE_ATTR, []))
    if replace_same and entries and entries[-1].get("kind") == kind:
        object.__setattr__(model, STRUCTURE_ATTR, entries[:-1])
    try:
        from robustcompress.checkpoint import add_structure
    except ImportError:  # checkpoints not available: keep the same list by hand
        object.__setattr__(
            model, STRUCTURE_ATTR, list(getattr(model, STRUCTURE_ATTR, [])) + [{"kind": kind, **params}]
        )
        return
    add_structure(model, kind, **params)
