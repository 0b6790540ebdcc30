"""Gradient estimators for models whose forward pass is not usefully differentiable.

Rounding (quantization) has a zero gradient almost everywhere, so a plain gradient attack on a
fake-quantized model does not move and reports false robustness. These estimators change only the
backward pass the attack sees; the forward pass, and so every prediction, stays exact.

- `StraightThrough`: rounding ops (round, floor, ceil, trunc) pass the gradient through as identity,
  wherever they are called, through a torch function mode (no change to the model's code).
- `BPDA`: a named submodule is treated as the identity (or a given differentiable stand-in) on the
  backward pass (Athalye et al. 2018).
- `EOT`: the gradient is averaged over several forward passes of a randomised model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from robustcompress.errors import ConfigError, UnsupportedModelError

_ROUNDING = {
    torch.round,
    torch.floor,
    torch.ceil,
    torch.trunc,
    torch.fix,
    torch.Tensor.round,
    torch.Tensor.floor,
    torch.Tensor.ceil,
    torch.Tensor.trunc,
    torch.Tensor.fix,
}


class GradientEstimator:
    """The identity estimator: ordinary autograd, one sample."""

    samples: int = 1

    def context(self, model: nn.Module):
        """A context manager active while the attack computes a gradient."""
        return nullcontext()

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


class _StraightThroughMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _ROUNDING and isinstance(out, torch.Tensor) and out.is_floating_point():
            x = args[0]
            if isinstance(x, torch.Tensor) and x.requires_grad:
                return x + (out - x).detach()
        return out


class StraightThrough(GradientEstimator):
    """Rounding ops pass gradients through unchanged (the straight-through estimator)."""

    def context(self, model: nn.Module):
        return _StraightThroughMode()


class BPDA(GradientEstimator):
    """Backward pass differentiable approximation for the submodule `module` (a dotted name).

    Forward: the module's real output. Backward: the gradient of `approx(input)` (identity by
    default, which needs the output to have the input's shape).
    """

    def __init__(self, module: str, approx: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not module:
            raise ConfigError(
                "BPDA needs the dotted name of the non-differentiable module (e.g. 'net.quant')"
            )
        self.module = module
        self.approx = approx

    @contextmanager
    def context(self, model: nn.Module) -> Iterator[None]:
        try:
            target = model.get_submodule(self.module)
        except AttributeError:
            names = ", ".join(n for n, _ in model.named_modules() if n) or "(none)"
            raise ConfigError(
                f"BPDA module {self.module!r} is not in the model; its modules: {names}"
            ) from None

        def hook(_mod: nn.Module, inputs: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            x = inputs[0]
            if not x.requires_grad:
                return out
            surrogate = self.approx(x) if self.approx is not None else x
            if surrogate.shape != out.shape:
                raise UnsupportedModelError(
                    f"BPDA identity needs module {self.module!r} to keep the shape of its input "
                    f"({tuple(x.shape)} -> {tuple(out.shape)}); pass approx= a differentiable stand-in"
                )
            return surrogate + (out - surrogate).detach()

        handle = target.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def __repr__(self) -> str:
        return f"BPDA(module={self.module!r})"


class EOT(GradientEstimator):
    """Expectation over transformation: average the gradient over `samples` forward passes."""

    def __init__(self, samples: int = 8, inner: GradientEstimator | None = None):
        if samples < 1:
            raise ConfigError(f"EOT samples must be >= 1; got {samples}")
        self.samples = samples
        self.inner = inner or GradientEstimator()

    def context(self, model: nn.Module):
        return self.inner.context(model)

    def __repr__(self) -> str:
        return f"EOT(samples={self.samples}, inner={self.inner!r})"


def make_estimator(
    spec: GradientEstimator | str | None, *, module: str | None = None, samples: int = 8
) -> GradientEstimator:
    """An estimator from an object, or a name: none, ste, bpda (needs module), eot (samples)."""
    if isinstance(spec, GradientEstimator):
        return spec
    if spec in (None, "none"):
        return GradientEstimator()
    if spec == "ste":
        return StraightThrough()
    if spec == "bpda":
        return BPDA(module or "")
    if spec == "eot":
        return EOT(samples)
    raise ConfigError(f"unknown gradient estimator {spec!r}; use none, ste, bpda or eot")
