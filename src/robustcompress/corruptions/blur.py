"""Blur corruptions: defocus (disk), glass (blur + local pixel shuffle), motion, zoom, Gaussian."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustcompress.corruptions import _ops


@lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """A normalised pixel disk of `radius`, anti-aliased by a small Gaussian (3x3, or 5x5 past r=8)."""
    half = 8 if radius <= 8 else int(np.ceil(radius))
    ksize = 3 if radius <= 8 else 5
    coords = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(coords, coords)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g1 = np.exp(-(t**2) / (2 * alias_blur**2))
    g1 /= g1.sum()
    pad = ksize // 2
    k = np.pad(disk, pad, mode="reflect")  # NumPy 'reflect' is OpenCV's BORDER_REFLECT_101
    k = np.apply_along_axis(lambda r: np.convolve(r, g1, mode="valid"), 0, k)
    k = np.apply_along_axis(lambda r: np.convolve(r, g1, mode="valid"), 1, k)
    rows, cols = np.nonzero(k > k.max() * 1e-12)  # drop taps that cannot change an 8-bit result
    r = max(abs(rows - half).max(), abs(cols - half).max())
    return k[half - r : half + r + 1, half - r : half + r + 1]


def defocus_blur(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Convolution with an anti-aliased disk (an out-of-focus lens), reflected borders."""
    return _ops.shifted_sum(x, disk_kernel(float(p["radius"]), float(p["alias_blur"]))).clamp_(0, 1)


def glass_blur(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Frosted glass: Gaussian blur, local pixel shuffling, Gaussian blur again.

    As the reference, the first blur is truncated to 8 bits and each visited pixel (rows and
    columns delta+1 .. size-delta) copies the pixel (dy, dx) away, with dx, dy drawn from
    [-delta, delta). The reference walks the pixels in descending order, so for delta = 1 every
    source is still unvisited and the walk equals this parallel gather exactly; for larger delta
    the gather is the parallel version of the walk. `swap_prob` < 1 (MNIST-C) skips pixels at random.
    """
    sigma, delta, iters = p["sigma"], int(p["delta"]), int(p["iterations"])
    swap_prob = p.get("swap_prob", 1.0)
    n, c, h, w = x.shape
    x = _ops.truncate_levels(_ops.gaussian_blur(x, sigma))
    rows = torch.arange(delta + 1, h - delta + 1, device=x.device)
    cols = torch.arange(delta + 1, w - delta + 1, device=x.device)
    rr, cc = torch.meshgrid(rows, cols, indexing="ij")
    base = torch.arange(h * w, device=x.device).expand(n, h * w).clone()
    target = (rr * w + cc).flatten()
    for _ in range(iters):
        shape = (n, len(rows), len(cols))
        dx = _ops.randint(shape, g, x.device, -delta, delta)
        dy = _ops.randint(shape, g, x.device, -delta, delta)
        if swap_prob < 1:
            skip = _ops.uniform(shape, g, x.device) >= swap_prob
            dx, dy = dx.masked_fill(skip, 0), dy.masked_fill(skip, 0)
        src = ((rr + dy) * w + (cc + dx)).flatten(1)
        idx = base.clone()
        idx[:, target] = src
        x = x.flatten(2).gather(2, idx[:, None, :].expand(n, c, h * w)).view(n, c, h, w)
    return _ops.gaussian_blur(x, sigma).clamp_(0, 1)


def motion_blur(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Camera shake: a one-sided Gaussian line blur at a random angle per image, 8-bit output."""
    angles = _ops.uniform((x.shape[0],), g, "cpu", *p.get("angle", (-45.0, 45.0)), dtype=torch.float64)
    return _ops.round_levels(_ops.motion_blur(x, p["radius"], p["sigma"], angles))


def zoom_blur(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor (a camera moving towards the scene)."""
    return _ops.zoom_mean(x, tuple(p["factors"])).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Gaussian blur of standard deviation `sigma` (edge pixels repeated)."""
    return _ops.gaussian_blur(x, p["sigma"]).clamp_(0, 1)
