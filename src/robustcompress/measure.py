"""Measurements every room needs: parameter, non-zero and MAC counts, sparsity, predictions, accuracy.

Kept on the lowest floor (torch only) so that training, pruning and the evaluations share one
definition of each number without importing one another.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from robustcompress.device import model_device
from robustcompress.modes import eval_mode

CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def effective_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass sees it (masks applied), keyed "module.param"."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList) or name.endswith("parametrizations"):
            continue
        prefix = f"{name}." if name else ""
        for pname, p in module.named_parameters(recurse=False):
            out[prefix + pname] = p.detach()
        if parametrize.is_parametrized(module):
            for pname in module.parametrizations:
                out[prefix + pname] = getattr(module, pname).detach()
    return out


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters); a masked weight counts once, at its full size."""
    tensors = effective_tensors(model).values()
    return sum(t.numel() for t in tensors), sum(int(torch.count_nonzero(t)) for t in tensors)


def layer_sparsity(model: nn.Module) -> list[dict]:
    """One row per conv / linear layer: name, type, weights, non-zeros, sparsity (paper 002 Fig. 2)."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, CONV_LINEAR):
            w = module.weight.detach()
            nonzero = int(torch.count_nonzero(w))
            kind = type(module).__name__.removeprefix("Parametrized")
            sparse = 1 - nonzero / max(w.numel(), 1)
            rows.append(
                {"layer": name, "type": kind, "weights": w.numel(), "nonzero": nonzero, "sparsity": sparse}
            )
    return rows


def sparsity(model: nn.Module) -> float:
    """Fraction of zeros among conv and linear weights (what pruning targets)."""
    rows = layer_sparsity(model)
    total = sum(r["weights"] for r in rows)
    return 1 - sum(r["nonzero"] for r in rows) / max(total, 1)


@torch.no_grad()
def count_macs(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(MACs, MACs with non-zero weights) of one image, from forward hooks on conv and linear layers."""
    totals = [0, 0]

    def hook(module, inputs, output):
        w = module.weight
        per_out = output[0].numel() // output.shape[1]  # output positions per output channel
        totals[0] += w.numel() * per_out
        totals[1] += int(torch.count_nonzero(w)) * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, CONV_LINEAR)]
    try:
        with eval_mode(model):
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    return totals[0], totals[1]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels for images x (any device), in eval mode; returns labels on x's device."""
    device = model_device(model)
    with eval_mode(model):
        out = [model(x[i : i + batch_size].to(device)).argmax(1) for i in range(0, len(x), batch_size)]
    out = [o.to(x.device) for o in out]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def accuracy(model: nn.Module, data, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on an ImageData (fraction in [0, 1]; NaN when it is empty)."""
    if len(data) == 0:
        return float("nan")
    return (predict(model, data.x, batch_size) == data.y).float().mean().item()
