"""Gaussian noise training for randomized smoothing: the base classifier must be right under noise.

`gaussian` (Cohen et al. 2019): cross-entropy on x + N(0, sigma^2 I) in pixel space. With
`consistency_weight > 0` it becomes Jeong and Shin's (NeurIPS 2020) consistency regularisation:
m noisy copies of each image, the mean cross-entropy over the copies, plus
  consistency_weight * mean_i KL(p_mean || p_i) + entropy_weight * H(p_mean),
p_i the softmax of copy i and p_mean their average (their eta = 0.5 weights the entropy term;
their lambda is consistency_weight). The clean logits returned (for the running accuracy) are
the logits of the first noisy copy: the fit loop's accuracy then reads the accuracy under noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.errors import ConfigError
from robustcompress.training.objectives import register_objective


@register_objective("gaussian")
class GaussianNoise:
    """Noise augmentation at sigma, optionally with the consistency regulariser."""

    def __init__(
        self,
        sigma: float = 0.25,
        consistency_weight: float = 0.0,
        entropy_weight: float = 0.5,
        m: int = 2,
        seed: int = 0,
    ):
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ConfigError(f"gaussian objective: sigma must be >= 0; got {sigma!r}")
        if consistency_weight < 0 or entropy_weight < 0:
            raise ConfigError("gaussian objective: consistency_weight and entropy_weight must be >= 0")
        if int(m) != m or m < 1 or (consistency_weight > 0 and m < 2):
            raise ConfigError(
                f"gaussian objective: m (noise copies) must be >= 2 with consistency; got {m!r}"
            )
        self.sigma, self.weight, self.entropy_weight = (
            float(sigma),
            float(consistency_weight),
            float(entropy_weight),
        )
        self.m = int(m) if consistency_weight > 0 else 1
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        copies = x.repeat(self.m, *([1] * (x.dim() - 1)))  # copy j of image i at j * N + i
        noise = torch.randn(copies.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        logits = model(copies + self.sigma * noise)
        loss = F.cross_entropy(logits, y.repeat(self.m))
        if self.weight > 0:
            log_p = F.log_softmax(logits, 1).view(self.m, len(x), -1)
            p_mean = log_p.exp().mean(0)
            log_mean = p_mean.clamp_min(1e-12).log()
            kl = (p_mean * (log_mean - log_p)).sum(-1).mean()  # mean over copies and images
            entropy = -(p_mean * log_mean).sum(-1).mean()
            loss = loss + self.weight * kl + self.entropy_weight * entropy
        return loss, logits[: len(x)]
