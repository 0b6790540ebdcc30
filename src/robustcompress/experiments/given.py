"""A baseline you give: `[model] checkpoint = FOLDER` or `[model] weights = FILE` instead of training one.

The given model IS the experiment's baseline ([train] is not run for it; it still sets the later
stages' fine-tuning). Its artifact key is the file's content hash with the data and model spec, so
editing the file makes a new baseline (and new stages after it), while configs that give no model
keep the keys they always had. Everything is checked before any weights are read: the file exists,
a checkpoint's dataset and architecture match the config's; `plan` reads no weights at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustcompress.checkpoint import META, WEIGHTS, check_compatible, load_checkpoint, read_meta
from robustcompress.errors import CheckpointError, ConfigError
from robustcompress.models.importing import import_model, normalization
from robustcompress.models.zoo import ModelSpec


@dataclass
class GivenModel:
    """What the config gives: the file, the spec of the model in it and the content hash of the file."""

    kind: str  # "checkpoint" or "weights"
    path: Path
    spec: dict[str, Any]
    sha256: str

    def key_dict(self) -> dict[str, Any]:
        """The part of the baseline's key that stands for the file (the data part is added by the runner)."""
        return {"model": self.spec, self.kind: self.sha256}


def given_model(cfg: Any, info: Any) -> GivenModel | None:
    """The model `cfg` ([model] checkpoint or weights) gives for data described by `info`; None if none.

    Raises a ConfigError for a missing file, or a checkpoint of another dataset or architecture.
    """
    m = cfg.model
    if m.checkpoint is not None:
        return _checkpoint(cfg, Path(m.checkpoint), info)
    if m.weights is not None:
        path = Path(m.weights)
        if not path.is_file():
            raise ConfigError(
                f"[model] weights = {str(path)!r}: no such file; give the path of your trained weights "
                "(.safetensors or a .pth state dict), relative to the folder you run from"
            )
        mean, std = normalization(_normalize(m.normalize), info)
        spec = ModelSpec.for_data(m.name, info, mean=mean, std=std, stem=m.stem, width=m.width).to_dict()
        return GivenModel("weights", path, spec, file_sha256(path))
    return None


def load_given(given: GivenModel, cfg: Any, info: Any) -> nn.Module:
    """The given model, built and its weights loaded (the replaced head, if any, seeded by cfg.seed)."""
    if given.kind == "checkpoint":
        model = load_checkpoint(given.path)[0]
    else:
        m = cfg.model
        try:
            model = import_model(
                m.name,
                info,
                given.path,
                normalize=_normalize(m.normalize),
                num_classes=info.num_classes if m.replace_head else None,
                stem=m.stem,
                width=m.width,
                seed=cfg.seed,
            )
        except CheckpointError as exc:
            raise ConfigError(
                f"[model] weights = {str(given.path)!r} with name = {m.name!r}: {exc}\n"
                "In the config: [model] name (and width, stem) is the architecture the weights were saved "
                "from; replace_head = true when they have"
                ' another class count; stem = "imagenet" for torchvision\'s ImageNet weights.'
            ) from None
    model.rc_given = {given.kind: str(given.path), "sha256": given.sha256}  # in the artifact's meta
    return model


def file_sha256(*paths: Path) -> str:
    """The sha256 of the files' contents, one after the other (read in full every time: a cached
    hash could miss an edit that keeps the file's size and time stamp)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _checkpoint(cfg: Any, path: Path, info: Any) -> GivenModel:
    try:
        meta = read_meta(path)
    except CheckpointError as exc:
        raise ConfigError(f"[model] checkpoint = {str(path)!r}: {exc}") from None
    spec = meta["model"]
    own = (meta.get("data") or {}).get("dataset")
    if own is not None and own != cfg.data.dataset:
        raise ConfigError(
            f"[model] checkpoint {str(path)!r} was made on dataset {own!r}, but [data] dataset is "
            f"{cfg.data.dataset!r}; set [data] dataset = {own!r}, or give a checkpoint made on "
            f"{cfg.data.dataset!r} (for another dataset, import its weights with [model] weights and "
            "replace_head = true)"
        )
    if "name" in cfg.model.model_fields_set and cfg.model.name != spec.get("name"):
        raise ConfigError(
            f"[model] name is {cfg.model.name!r}, but checkpoint {str(path)!r} holds a "
            f"{spec.get('name')!r}; remove [model] name (the checkpoint's architecture is used) or give "
            f"a {cfg.model.name!r} checkpoint"
        )
    try:
        check_compatible(meta, info.num_classes, info.in_channels, cfg.data.dataset)
    except CheckpointError as exc:
        raise ConfigError(f"[model] checkpoint = {str(path)!r}: {exc}") from None
    return GivenModel("checkpoint", path, spec, file_sha256(path / WEIGHTS, path / META))


def _normalize(value: str | list[list[float]]) -> Any:
    """The config's normalize as import takes it: text as is, [[means], [stds]] as a pair."""
    return value if isinstance(value, str) else tuple(value)
