"""Per-channel mean and std of uint8 images, exact and in constant memory (a 256-bin histogram)."""

from __future__ import annotations

import numpy as np


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std over [0, 1] of each channel of uint8 N x C x H x W images."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        if total == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(var**0.5 if var > 0 else 1.0)
    return means, stds
