"""Noise corruptions: every pixel (and channel) draws its own noise."""

from __future__ import annotations

import torch

from robustcompress.corruptions import _ops


def gaussian_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation `sigma`."""
    return (x + _ops.normal(x.shape, g, x.device, std=p["sigma"])).clamp(0, 1)


def shot_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Photon noise: Poisson(x * lam) / lam, so brighter pixels get more absolute noise."""
    lam = p["lam"]
    rate = (x * lam).to(g.device)
    return (torch.poisson(rate, generator=g).to(x.device) / lam).clamp(0, 1)


def impulse_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a fraction `amount` of the values (per channel) is set to 0 or 1, half each.

    One uniform draw per value decides both: u < amount/2 is pepper, amount/2 <= u < amount salt.
    """
    u = _ops.uniform(x.shape, g, x.device)
    half = p["amount"] / 2
    out = torch.where(u < half, torch.zeros_like(x), x)
    return torch.where((u >= half) & (u < p["amount"]), torch.ones_like(x), out)


def speckle_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Multiplicative Gaussian noise: x + x * N(0, sigma)."""
    return (x + x * _ops.normal(x.shape, g, x.device, std=p["sigma"])).clamp(0, 1)
