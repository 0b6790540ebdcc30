"""What a model can do, declared by its class instead of guessed from its type.

A model class (or any submodule class) may declare, as class attributes or methods:

- `input_gradients = False`: autograd does not reach the input (a compiled runtime model), so
  white-box attacks cannot run on it. Default True.
- `runtime = "onnxruntime"` (any name but "torch"): forward runs outside PyTorch; the model has
  no parameters to count and runs only as it is (no re-export to another runtime). Default "torch".
- `onnx_bytes() -> bytes`: the model already is a deployable ONNX model, which export writes as is.
- `stored_tensors() -> list[Tensor]`: the tensors the model stores, in their stored dtypes, for a
  model whose weights are not parameters (ordinary models: see compression.storage per layer).
- `differentiable_twin() -> nn.Module`: a model with input gradients that computes the same
  function (for `Int8Model`, its fake-quant twin), on which white-box attacks craft examples
  that are then evaluated on the model itself.

Only the class is read (not instance attributes), so a user model's own fields never answer by
accident. Ordinary nn.Modules get the defaults; `Int8Model` declares all five.
"""

from __future__ import annotations

import torch
from torch import nn


def has_input_gradients(model: nn.Module) -> bool:
    """Whether gradients with respect to the input exist (False if any submodule declares otherwise)."""
    return all(getattr(type(m), "input_gradients", True) for m in model.modules())


def runtime(model: nn.Module) -> str:
    """Where the model's forward runs: "torch", or the runtime it declares (e.g. "onnxruntime")."""
    return getattr(type(model), "runtime", "torch")


def runs_in_torch(model: nn.Module) -> bool:
    return runtime(model) == "torch"


def native_onnx(model: nn.Module) -> bytes | None:
    """The ONNX bytes of a model that is stored as an ONNX model, else None (export converts it)."""
    return model.onnx_bytes() if callable(getattr(type(model), "onnx_bytes", None)) else None


def stored_tensors(model: nn.Module) -> list[torch.Tensor] | None:
    """The tensors a compiled model stores (their dtypes as stored), else None for ordinary models."""
    return list(model.stored_tensors()) if callable(getattr(type(model), "stored_tensors", None)) else None


def differentiable_twin(model: nn.Module) -> nn.Module | None:
    """The model's declared differentiable stand-in (white-box attacks craft on it), else None."""
    make = getattr(type(model), "differentiable_twin", None)
    return model.differentiable_twin() if callable(make) else None
