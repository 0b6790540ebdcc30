"""The model registry and `ModelSpec`, the JSON-serialisable recipe that rebuilds a model."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from robustcompress.errors import ConfigError
from robustcompress.models import cnn, mobilenetv2, resnet, vgg
from robustcompress.models.normalize import NormalizedModel
from robustcompress.registry import Registry

SPEC_ATTR = "_rc_spec"
STRUCTURE_ATTR = "_rc_structure"

# A factory takes num_classes, in_channels, width, input_size and options; returns the network
# without normalisation (NormalizedModel adds it).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def _register(
    name: str, fn: Callable[..., nn.Module], uses_input_size: bool = False, uses_stem: bool = False
):
    def factory(num_classes, in_channels, width, input_size, stem=None, **options):
        kw = dict(num_classes=num_classes, in_channels=in_channels, width=width, **options)
        if uses_input_size:
            kw["input_size"] = input_size
        if uses_stem:
            if stem not in (None, "cifar", "imagenet"):
                raise ConfigError(f"unknown stem {stem!r} for model {name!r}; choose 'cifar' or 'imagenet'")
            kw["stem"] = stem or "cifar"
        elif stem not in (None, "cifar"):
            raise ConfigError(
                f"model {name!r} has no 'stem' option; "
                "resnet, vgg and mobilenetv2 models take stem='imagenet'"
            )
        return fn(**kw)

    MODELS.register(name)(factory)


_register("cnn8", cnn.CNN8, uses_input_size=True)
for _depth in ("resnet18", "resnet34", "resnet50"):
    _register(_depth, getattr(resnet, _depth), uses_stem=True)
for _depth in ("vgg11", "vgg16", "vgg19"):
    _register(_depth, lambda _d=_depth, **kw: vgg.VGG(_d, **kw), uses_input_size=True, uses_stem=True)
_register("mobilenetv2", mobilenetv2.MobileNetV2, uses_stem=True)


@dataclass
class ModelSpec:
    """Everything needed to rebuild an (uncompressed) model: stored in every checkpoint's metadata."""

    name: str
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    width: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    stem: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown model spec keys {sorted(unknown)}")
        return cls(**d)

    def build(self, seed: int | None = None) -> NormalizedModel:
        """The model; with `seed`, its initial weights are a function of the seed alone."""
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.build()
        if self.width <= 0:
            raise ConfigError(f"model width must be > 0, got {self.width}")
        mean = _per_channel(self.mean, self.in_channels, "mean")
        std = _per_channel(self.std, self.in_channels, "std")
        if ":" in self.name:
            net = _user_model(self.name, self.num_classes, self.in_channels, self.options)
        else:
            net = MODELS.get(self.name)(
                self.num_classes,
                self.in_channels,
                self.width,
                self.input_size,
                stem=self.stem,
                **self.options,
            )
        model = NormalizedModel(net, mean, std)
        object.__setattr__(model, SPEC_ATTR, self.to_dict())  # lets checkpoints rebuild it
        object.__setattr__(model, STRUCTURE_ATTR, [])
        return model

    @classmethod
    def for_data(cls, name: str, info: Any, **kwargs: Any) -> ModelSpec:
        """A spec whose classes, channels, input size and normalisation come from a DatasetInfo."""
        base = dict(
            num_classes=info.num_classes,
            in_channels=info.in_channels,
            input_size=info.input_size,
            mean=list(info.mean),
            std=list(info.std),
        )
        return cls(name=name, **{**base, **kwargs})


def build_model(name: str, **kwargs: Any) -> NormalizedModel:
    """Build a zoo model (or `package.module:factory`) that takes images in [0, 1]."""
    return ModelSpec(name=name, **kwargs).build()


def list_models() -> list[str]:
    return MODELS.names()


def _per_channel(values: list[float], channels: int, what: str) -> list[float]:
    values = list(values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(f"normalisation {what} has {len(values)} values for {channels} input channels")
    return values


def _user_model(path: str, num_classes: int, in_channels: int, options: dict[str, Any]) -> nn.Module:
    module_name, _, attr = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot import user model {path!r} ({exc}); "
            "give it as 'package.module:factory' on the Python path"
        ) from None
    params = inspect.signature(factory).parameters
    kw = dict(options)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in params:
            kw[key] = value
    try:
        net = factory(**kw)
    except TypeError as exc:
        raise ConfigError(
            f"user model factory {path!r} cannot be called with {sorted(kw)} ({exc}); "
            "give it defaults for its other arguments (it may take num_classes and in_channels)"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"user model factory {path!r} returned {type(net).__name__}, not a torch.nn.Module")
    return net
