"""Bring your own model: a network and its trained weights in, a model that takes [0, 1] pixels out.

The model is wrapped with the normalisation it was trained with (none, the dataset's statistics, or
explicit per-channel values) and carries a `ModelSpec`, so it saves as a checkpoint and rebuilds.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcompress.errors import ConfigError
from robustcompress.models.normalize import NormalizedModel
from robustcompress.models.torchvision_names import family
from robustcompress.models.weights import FitReport, fit_state_dict, read_state_dict
from robustcompress.models.zoo import MODELS, SPEC_ATTR, STRUCTURE_ATTR, ModelSpec

Normalization = str | tuple[Sequence[float], Sequence[float]]
PER_CHANNEL = "the mean of each channel, then the standard deviation of each channel"


def import_model(
    model: str | Callable[..., nn.Module] | nn.Module,
    dataset: Any,
    weights: str | Path | dict[str, torch.Tensor] | None = None,
    **options: Any,
) -> NormalizedModel:
    """Your trained network as a robustcompress model (takes images in [0, 1]).

    `model`: a zoo name, 'package.module:factory', a factory (function or class) or a module.
    `dataset`: a dataset name, DataSplits or DatasetInfo (classes, channels, statistics).
    `weights`: a .safetensors / .pth state dict file, or a state dict; None keeps the module's own.
    `options` (keywords, see `import_with_report`): `normalize` "none" (the network was trained on
    [0, 1] pixels), "dataset" (the dataset's mean and std) or (mean, std), one value per channel;
    `num_classes`: when the weights have another class count (e.g. ImageNet's 1000), the classifier
    head is replaced by a new one, initialised from `seed`; `stem`, `width`: the zoo's layout;
    `data_root`: where a named dataset's statistics are read.
    """
    return import_with_report(model, dataset, weights, **options)[0]


def import_with_report(
    model: str | Callable[..., nn.Module] | nn.Module,
    dataset: Any,
    weights: str | Path | dict[str, torch.Tensor] | None = None,
    *,
    normalize: Normalization = "none",
    num_classes: int | None = None,
    stem: str | None = None,
    width: float = 1.0,
    seed: int = 0,
    data_root: str | Path | None = None,
) -> tuple[NormalizedModel, FitReport]:
    """As `import_model`, also returning how the weights' names were matched and what was replaced."""
    info = _dataset_info(dataset, data_root)
    if num_classes is not None and num_classes != info.num_classes:
        raise ConfigError(
            f"num_classes {num_classes} differs from the {info.num_classes} classes of dataset "
            f"{info.name!r}; a model is trained and measured on its dataset: give {info.num_classes}"
        )
    mean, std = normalization(normalize, info)
    if stem is not None and not (isinstance(model, str) and family(model)):
        raise ConfigError(f"stem {stem!r} is an option of the zoo's resnet, vgg and mobilenetv2 models only")
    spec = ModelSpec.for_data("", info, mean=mean, std=std, stem=stem, width=width)
    instance = model if isinstance(model, nn.Module) else None
    spec.name = _model_path(model)
    built = spec.build(seed=seed)
    if instance is not None:
        built = _wrap_instance(instance, built, spec)
    report = FitReport()
    if weights is not None:
        state = weights if isinstance(weights, dict) else read_state_dict(weights)
        where = "the weights" if isinstance(weights, dict) else f"weights {weights}"
        report = fit_state_dict(
            built.net,
            state,
            model_name=spec.name,
            num_classes=info.num_classes,
            replace_head=num_classes is not None,
            where=where,
            fix=_fix_hint(spec.name, stem),
        )
    return built.eval(), report


def normalization(value: Normalization, info: Any) -> tuple[list[float], list[float]]:
    """(mean, std) per channel from "none", "dataset", "M1,..,MC,S1,..,SC" or a (mean, std) pair."""
    channels = info.in_channels
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            return [0.0] * channels, [1.0] * channels
        if text == "dataset":
            return list(info.mean), list(info.std)
        try:
            numbers = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            numbers = []
        if not numbers:
            raise ConfigError(
                f"normalize {value!r} is not 'none', 'dataset' or MEAN,STD numbers: {PER_CHANNEL}, "
                f"e.g. {_example(info)} for {info.name!r}"
            )
        if len(numbers) != 2 * channels:
            raise ConfigError(
                f"normalize {value!r} has {len(numbers)} numbers, but {info.name!r} has {channels}-channel "
                f"images: give {2 * channels}, {PER_CHANNEL}, e.g. {_example(info)}"
            )
        mean, std = numbers[:channels], numbers[channels:]
    else:
        try:
            mean, std = ([float(v) for v in part] for part in value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"normalize must be 'none', 'dataset' or (mean, std) lists, got {value!r}"
            ) from None
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(
                f"normalize has {len(mean)} means and {len(std)} standard deviations, but {info.name!r} has "
                f"{channels}-channel images: give {channels} of each"
            )
    if any(s <= 0 for s in std):
        raise ConfigError(f"normalize: standard deviations must be > 0, got {std}")
    return mean, std


def _example(info: Any) -> str:
    return ",".join(f"{v:.4g}" for v in [*info.mean, *info.std])


def _dataset_info(dataset: Any, data_root: str | Path | None):
    if isinstance(dataset, str):
        from robustcompress.data import load_dataset

        return load_dataset(dataset, root=data_root, limit_train=1, val_fraction=0.0, limit_test=1).info
    info = getattr(dataset, "info", dataset)
    if not all(hasattr(info, a) for a in ("num_classes", "in_channels", "mean", "std")):
        raise ConfigError(
            f"dataset must be a dataset name, DataSplits or DatasetInfo, got {type(dataset).__name__}"
        )
    return info


def _model_path(model: Any) -> str:
    """What a ModelSpec names: a zoo name or 'package.module:factory' that rebuilds the network."""
    if isinstance(model, str):
        if ":" not in model and model not in MODELS.names():
            raise ConfigError(
                f"unknown model {model!r}; choose one of {', '.join(MODELS.names())} "
                "or give your factory as 'package.module:factory'"
            )
        return model
    factory = type(model) if isinstance(model, nn.Module) else model
    path = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
    module_name, _, attr = path.partition(":")
    try:
        found = importlib.import_module(module_name)
        for part in attr.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        found = None
    if found is not factory or "<" in attr:
        raise ConfigError(
            f"{factory!r} cannot be found again by import path, so a checkpoint could not rebuild it; "
            "define the model's class or factory at the top level of an importable module"
        )
    return path


def _wrap_instance(instance: nn.Module, built: NormalizedModel, spec: ModelSpec) -> NormalizedModel:
    """`instance` (a copy, weights kept) in place of the rebuilt network, once it is sure to rebuild alike."""
    rebuilt = {k: tuple(v.shape) for k, v in built.net.state_dict().items()}
    own = {k: tuple(v.shape) for k, v in instance.state_dict().items()}
    if rebuilt != own:
        raise ConfigError(
            f"{spec.name}(num_classes={spec.num_classes}, in_channels={spec.in_channels}) builds another "
            f"network than the module given (their tensors differ), so a checkpoint could not rebuild it; "
            "pass a factory that takes num_classes and in_channels instead of a module"
        )
    model = NormalizedModel(copy.deepcopy(instance), spec.mean, spec.std)
    object.__setattr__(model, SPEC_ATTR, getattr(built, SPEC_ATTR))
    object.__setattr__(model, STRUCTURE_ATTR, [])
    return model


def _fix_hint(name: str, stem: str | None) -> str:
    hint = "Give the architecture the weights were saved from (--model) and their class count (--num-classes)"
    if family(name) and stem != "imagenet":
        hint += "; torchvision's ImageNet weights need --stem imagenet"
    return hint + "."
