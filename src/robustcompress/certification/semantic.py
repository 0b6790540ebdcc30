"""Probabilistically certified accuracy (PCA) under a semantic transformation family.

An input x with label y is probabilistically robust when P_T(f(T(x)) = y) >= 1 - eps for T drawn
from the family. Draw n transformations, count the k correct; x is certified (at confidence
1 - alpha) when the one-sided Clopper-Pearson lower bound of k / n is at least 1 - eps (the
sound estimator of CC-Cert, Pautov et al. 2022, and of paper 004's PCA). PCA is the share of
inputs certified; beside it the plain accuracy under the same transformations (mean k / n).

With zero failures the bound is alpha^(1/n), so n >= ln(alpha) / ln(1 - eps) samples are needed
before any input can pass (eps 0.05, alpha 0.001: n >= 135).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustcompress.certification.smoothing import check_alpha, count_classes, lower_confidence_bound
from robustcompress.certification.transforms import TransformFamily
from robustcompress.errors import ConfigError


def check_pca(n: int, eps: float, alpha: float) -> None:
    if n < 1:
        raise ConfigError(f"n (transformations per input) must be at least 1; got {n}")
    check_alpha(alpha)
    check_alpha(eps, "eps")


def min_samples(eps: float, alpha: float) -> int:
    """The smallest n at which an input with no failure is certified: ceil(ln alpha / ln(1 - eps))."""
    n = math.ceil(math.log(alpha) / math.log1p(-eps))
    return n if lower_confidence_bound(n, n, alpha) >= 1 - eps else n + 1  # guard the rounding


@dataclass(frozen=True)
class PcaResult:
    """One input: k of n transformed copies classified correctly, and whether that certifies it."""

    correct: int
    n: int
    p_lower: float
    certified: bool


def certify_semantic(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    family: TransformFamily,
    n: int,
    eps: float,
    alpha: float,
    generator: torch.Generator,
    batch_size: int = 1000,
) -> list[PcaResult]:
    """PCA decision for each image of x (N, C, H, W) with labels y, n transformations each."""
    check_pca(n, eps, alpha)

    def perturb(clean: torch.Tensor, first: int, last: int) -> torch.Tensor:
        return family.sample(clean.contiguous(), generator)

    was_training = model.training
    model.eval()
    try:
        counts = count_classes(model, x, n, perturb, batch_size)
    finally:
        model.train(was_training)
    out = []
    for row, label in zip(counts, y.tolist()):
        k = int(row[label]) if label < len(row) else 0
        p = lower_confidence_bound(k, n, alpha)
        out.append(PcaResult(k, n, p, p >= 1 - eps))
    return out
