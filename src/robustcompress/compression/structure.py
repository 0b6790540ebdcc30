"""Record model changes so checkpoints (and rcz files) can rebuild them before loading weights.

Thin bridge to `robustcompress.checkpoint` (`add_structure`, `STRUCTURES`); until that module
exists the records live on the model and replays in a local table with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

Replay = Callable[[nn.Module, dict[str, Any]], nn.Module]
LOCAL_STRUCTURES: dict[str, Replay] = {}


def _checkpoint():
    try:
        from robustcompress import checkpoint
    except ImportError:
        return None
    return checkpoint


def register_structure(kind: str) -> Callable[[Replay], Replay]:
    """Register `fn(model, params) -> model` that redoes a change of kind `kind` on a fresh model."""

    def add(fn: Replay) -> Replay:
        LOCAL_STRUCTURES[kind] = fn
        ckpt = _checkpoint()
        if ckpt is not None:
            table = ckpt.STRUCTURES
            if hasattr(table, "register"):
                table.register(kind)(fn)
            else:
                table[kind] = fn
        return fn

    return add


def add_structure(model: nn.Module, kind: str, **params: Any) -> None:
    ckpt = _checkpoint()
    if ckpt is not None:
        ckpt.add_structure(model, kind, **params)
    else:
        model.__dict__.setdefault("_rc_structure", []).append({"kind": kind, **params})


def structure_of(model: nn.Module) -> list[dict[str, Any]]:
    """The structure records of `model` (a JSON-able list of {"kind": ..., params})."""
    ckpt = _checkpoint()
    if ckpt is not None and hasattr(ckpt, "structure_of"):
        return list(ckpt.structure_of(model))
    return list(model.__dict__.get("_rc_structure", []))


def replay_structure(model: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    for rec in records:
        params = {k: v for k, v in rec.items() if k != "kind"}
        fn = LOCAL_STRUCTURES.get(rec["kind"])
        if fn is None:
            ckpt = _checkpoint()
            table = ckpt.STRUCTURES if ckpt is not None else {}
            fn = table.get(rec["kind"]) if hasattr(table, "get") else None
        if fn is None:
            from robustcompress.errors import CheckpointError

            raise CheckpointError(f"unknown structure kind {rec['kind']!r}; is the module that made it installed?")
        model = fn(model, params)
        add_structure(model, rec["kind"], **params)
    return model
