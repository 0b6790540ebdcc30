"""Checkpoints: a folder with weights in safetensors and metadata in JSON. Nothing is ever unpickled.

A model carries its `ModelSpec` and the list of structural changes made to it (hardened pruning,
clustering, fake quantization ...). Loading rebuilds the spec's model, replays each change through
`STRUCTURES[kind]`, then loads the weights, so compressed models round-trip exactly.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from robustcompress import __version__
from robustcompress.errors import CheckpointError
from robustcompress.fileio import atomic_dir, atomic_write_json, default_permissions
from robustcompress.models.zoo import SPEC_ATTR as _SPEC_ATTR
from robustcompress.models.zoo import STRUCTURE_ATTR as _STRUCTURE_ATTR
from robustcompress.models.zoo import ModelSpec
from robustcompress.registry import Registry

WEIGHTS = "model.safetensors"
META = "meta.json"
FORMAT_VERSION = 1

# kind -> fn(model, params) -> model; registered by the areas that change a model's structure.
STRUCTURES: Registry[Callable[[nn.Module, dict[str, Any]], nn.Module]] = Registry("structure")


def attach_spec(model: nn.Module, spec: ModelSpec | dict[str, Any]) -> nn.Module:
    """Remember how to rebuild `model` (done by ModelSpec.build; call it for hand-made models)."""
    object.__setattr__(model, _SPEC_ATTR, spec.to_dict() if isinstance(spec, ModelSpec) else dict(spec))
    if not hasattr(model, _STRUCTURE_ATTR):
        object.__setattr__(model, _STRUCTURE_ATTR, [])
    return model


def spec_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, _SPEC_ATTR, None)
    if spec is None:
        raise CheckpointError(
            f"{type(model).__name__} has no model spec, so it cannot be saved as a checkpoint; "
            "build it with robustcompress.models.build_model or call checkpoint.attach_spec(model, spec)"
        )
    return spec


def structure_of(model: nn.Module) -> list[dict[str, Any]]:
    return list(getattr(model, _STRUCTURE_ATTR, []))


def add_structure(model: nn.Module, kind: str, **params: Any) -> nn.Module:
    """Record a structural change; `params` must be JSON-serialisable and enough to replay it."""
    json.dumps(params)  # fail now, not at save time
    entries = structure_of(model) + [{"kind": kind, **params}]
    object.__setattr__(model, _STRUCTURE_ATTR, entries)
    return model


def carry_metadata(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Copy spec and structure from `src` to `dst` (for transforms that return a new module)."""
    if hasattr(src, _SPEC_ATTR):
        object.__setattr__(dst, _SPEC_ATTR, copy.deepcopy(getattr(src, _SPEC_ATTR)))
    object.__setattr__(dst, _STRUCTURE_ATTR, copy.deepcopy(structure_of(src)))
    return dst


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    meta: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write `directory` atomically: built in a temporary sibling folder, then swapped in."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    full_meta = {
        "format": FORMAT_VERSION,
        "robustcompress": __version__,
        "model": spec_of(model),
        "structure": structure_of(model),
        **(meta or {}),
    }
    with atomic_dir(directory) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(_dedupe(state), str(tmp / WEIGHTS))
        default_permissions(tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=_json_default))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return directory


def update_meta(path: str | Path, **entries: Any) -> dict[str, Any]:
    """Add or replace top-level entries of a checkpoint's meta.json (atomic rewrite)."""
    directory = _checkpoint_dir(path)
    meta = {**read_meta(directory), **entries}
    atomic_write_json(directory / META, meta, default=_json_default)
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    directory = _checkpoint_dir(path)
    try:
        meta = json.loads((directory / META).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{directory / META} is not valid JSON ({exc}); the checkpoint is damaged"
        ) from None
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(
            f"{directory / META} has no 'model' entry; it is not a robustcompress checkpoint"
        )
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder (or its model.safetensors) and load its weights."""
    directory = _checkpoint_dir(path)
    meta = read_meta(directory)
    model = build_from_meta(meta)
    load_weights(model, directory / WEIGHTS)
    return model.to(device).eval(), meta


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The model of a checkpoint's metadata, structure replayed, weights not loaded."""
    try:
        spec = ModelSpec.from_dict(meta["model"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint model spec is invalid: {exc}") from None
    model = spec.build()
    for entry in meta.get("structure", []):
        params = {k: v for k, v in entry.items() if k != "kind"}
        replayed = STRUCTURES.get(entry["kind"])(model, params)
        if replayed is not model:  # a transform that returns a new module (e.g. int8) keeps the spec
            carry_metadata(model, replayed)
        model = add_structure(replayed, entry["kind"], **params)
    return model


def load_weights(model: nn.Module, weights: Path) -> None:
    try:
        state = safetensors.torch.load_file(str(weights))
    except (OSError, safetensors.SafetensorError) as exc:
        raise CheckpointError(
            f"cannot read weights {weights}: {exc}; the file is damaged or not safetensors"
        ) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        spec = spec_of(model)
        details = []
        if wrong:
            k = wrong[0]
            details.append(
                f"{len(wrong)} tensors differ in shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                f"{tuple(expected[k].shape)} in the model)"
            )
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"weights in {weights} do not fit the architecture {spec.get('name')!r} with "
            f"{spec.get('num_classes')} classes and {spec.get('in_channels')} input channels: "
            + "; ".join(details)
            + ". The checkpoint belongs to another model or class count; pick the matching --model/--dataset."
        )
    model.load_state_dict(state, strict=True)


def check_compatible(meta: dict[str, Any], num_classes: int, in_channels: int, dataset: str = "") -> None:
    """Refuse to evaluate a checkpoint on data with another class count or channel count."""
    spec = meta["model"]
    if spec.get("num_classes") != num_classes or spec.get("in_channels") != in_channels:
        raise CheckpointError(
            f"checkpoint model {spec.get('name')!r} expects {spec.get('in_channels')}-channel images and "
            f"{spec.get('num_classes')} classes, but dataset {dataset!r} has {in_channels} channels and "
            f"{num_classes} classes; use the dataset the model was trained on "
            f"({meta.get('data', {}).get('dataset')})"
        )


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        if path.name == WEIGHTS or path.name == META:
            return path.parent
        raise CheckpointError(
            f"{path} is not a robustcompress checkpoint: give the checkpoint folder "
            f"(holding {WEIGHTS} and {META}). "
            "Pickled files (.pt, .pth, .pkl) are refused because unpickling can run arbitrary code."
        )
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist; give a folder written by robustcompress")
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(
            f"checkpoint folder {path} lacks {META} or {WEIGHTS}; it is incomplete or not ours"
        )
    return path


def _dedupe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: clone tensors that alias an earlier one."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (id(v), 0)
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")
