"""Noise corruptions: every pixel (and channel) draws its own noise."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from robustcompress.corruptions import _ops


def gaussian_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation `sigma`."""
    return _ops.normal(x.shape, g, x.device, std=p["sigma"]).add_(x).clamp_(0, 1)


def shot_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Photon noise: Poisson(x * lam) / lam, so brighter pixels get more absolute noise.

    Images on the 8-bit grid (every loaded dataset) have at most 256 distinct rates, so the counts
    come from exact per-level alias tables, one uniform each (`poisson_on_grid`); other inputs fall
    back to torch.poisson. Both give the same distribution, not the same draws.
    """
    lam = float(p["lam"])
    scaled = x * 255
    levels = scaled.round()
    low, high = torch.aminmax(levels)
    if low < 0 or high > 255 or scaled.sub_(levels).abs_().max() > 1e-3:  # off the 8-bit grid
        rate = (x * lam).clamp_min(0).to(g.device)
        return (torch.poisson(rate, generator=g).to(x.device) / lam).clamp(0, 1)
    return poisson_on_grid(levels.to(g.device), lam, g).to(x.device, x.dtype)


def poisson_on_grid(levels: torch.Tensor, lam: float, g: torch.Generator) -> torch.Tensor:
    """clamp(Poisson(levels / 255 * lam) / lam, 0, 1) for grey levels 0..255 (floats), by the alias method.

    Counts of ceil(lam) or more all give 1 after the clamp, so they share one outcome: K = ceil(lam) + 1
    outcomes per level. One float64 uniform u per value: w = (K + 1) * level + K * u names the
    column (integer part) of the level's table and decides (fraction against the column's keep
    probability) between the column's outcome and its alias. Exact up to float64 rounding of the
    probabilities (resolution 2^-35 at 255 levels x 501 columns).
    """
    threshold, keep, alias = alias_tables(lam, str(g.device))
    stride = threshold.shape[1]
    w = torch.rand(levels.shape, generator=g, device=g.device, dtype=torch.float64)
    w.mul_(stride - 1).add_(levels, alpha=stride)
    # int32 indices and index_select: 2-4x faster than int64 and take on the CPU, same picks
    idx = w.to(torch.int32).view(-1)
    take = w.view(-1) < threshold.view(-1).index_select(0, idx)
    out = torch.where(take, keep.view(-1).index_select(0, idx), alias.view(-1).index_select(0, idx))
    return out.view(levels.shape)


@lru_cache(maxsize=32)
def alias_tables(lam: float, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(256, K + 1) alias tables of clamp(Poisson(l / 255 * lam) / lam, 0, 1), per grey level l.

    threshold[l, c] = (K + 1) * l + c + probability of keeping column c; keep and alias hold the two
    outcomes (already divided by lam). Column K is a guard for K * u rounding up to K: it always
    gives what the end of column K - 1 gives.
    """
    from scipy import stats  # here, not at import: scipy.stats costs every command half a second

    top = math.ceil(lam)
    k = top + 1
    rates = np.arange(256)[:, None] / 255 * lam
    pmf = stats.poisson.pmf(np.arange(top)[None, :], rates)
    pmf = np.concatenate([pmf, stats.poisson.sf(top - 1, rates)], axis=1)
    pmf /= pmf.sum(1, keepdims=True)
    prob, alias = (np.stack(t) for t in zip(*(_vose(row) for row in pmf)))
    last = np.where(prob[:, -1] < 1, alias[:, -1], k - 1)
    prob = np.concatenate([prob, np.zeros((256, 1))], axis=1)  # guard: never keep
    alias = np.concatenate([alias, last[:, None]], axis=1)
    threshold = np.arange(256)[:, None] * (k + 1) + np.arange(k + 1)[None, :] + prob
    outcome = np.minimum(np.arange(k + 1) / lam, 1.0)
    return (
        torch.as_tensor(threshold, dtype=torch.float64, device=device),
        torch.as_tensor(np.broadcast_to(outcome, (256, k + 1)).copy(), dtype=torch.float32, device=device),
        torch.as_tensor(outcome[alias], dtype=torch.float32, device=device),
    )


def _vose(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias table of one distribution: column i keeps i with prob[i], else gives alias[i]."""
    k = len(pmf)
    scaled = (pmf * k).tolist()
    prob, alias = [1.0] * k, list(range(k))
    small = [i for i, s in enumerate(scaled) if s < 1]
    large = [i for i, s in enumerate(scaled) if s >= 1]
    while small and large:
        s, big = small.pop(), large.pop()
        prob[s], alias[s] = scaled[s], big
        scaled[big] -= 1 - scaled[s]
        (small if scaled[big] < 1 else large).append(big)
    return np.array(prob), np.array(alias)


def impulse_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a fraction `amount` of the values (per channel) is set to 0 or 1, half each.

    One uniform draw per value decides both: u < amount/2 is pepper, amount/2 <= u < amount salt.
    """
    u = _ops.uniform(x.shape, g, x.device)
    flip = u < p["amount"]
    return torch.where(flip, u.ge_(p["amount"] / 2), x)  # u becomes 1 (salt) or 0 (pepper) in place


def speckle_noise(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Multiplicative Gaussian noise: x + x * N(0, sigma)."""
    return _ops.normal(x.shape, g, x.device, std=p["sigma"]).mul_(x).add_(x).clamp_(0, 1)
