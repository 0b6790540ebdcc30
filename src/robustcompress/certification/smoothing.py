"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): CERTIFY and PREDICT.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), is certified at x
with L2 radius sigma * Phi^-1(pA) when the one-sided Clopper-Pearson lower bound pA of P(f(x + e)
= cA) at level alpha exceeds 1/2. cA is picked on n0 selection samples, pA estimated on n fresh
ones. Noise is added in pixel space (normalisation is inside the model), so any model from
pixels to logits works, the int8 ONNX Runtime model included (forward passes only).

Noise samples go through the model in batches of `batch_size`; when n is small several images
share a batch (`certify` takes a batch of images). All randomness comes from one torch.Generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robustcompress.device import channels_last, model_device, to_channels_last
from robustcompress.errors import ConfigError

ABSTAIN = -1


def check_smoothing(sigma: float, n0: int, n: int, alpha: float) -> None:
    """Refuse parameters CERTIFY cannot use, naming the fix."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma must be > 0 (the noise standard deviation in [0, 1] pixels); got {sigma!r}")
    if n < 1 or n0 < 1:
        raise ConfigError(f"n and n0 must be at least 1; got n = {n}, n0 = {n0}")
    if n0 > n:
        raise ConfigError(f"n0 ({n0} selection samples) must not exceed n ({n} estimation samples)")
    check_alpha(alpha)


def check_alpha(alpha: float, name: str = "alpha") -> None:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConfigError(f"{name} must lie strictly between 0 and 1; got {alpha!r}")


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound of a binomial proportion k / n."""
    from scipy.stats import beta  # scipy.stats at import would cost every command 0.7 s

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def radius_cap(sigma: float, n: int, alpha: float) -> float:
    """The largest radius n samples can certify (all n correct): sigma * Phi^-1(alpha^(1/n))."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def radius_of(sigma: float, p_a: float) -> float:
    """Cohen's certified L2 radius sigma * Phi^-1(p_A)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_a))


def predict_from_counts(counts: torch.Tensor, alpha: float) -> int:
    """PREDICT's test on one image's class counts: the top class, or ABSTAIN when the two-sided
    binomial test of the top two counts has p-value above alpha."""
    order = torch.argsort(counts, descending=True, stable=True).tolist()
    c1 = int(counts[order[0]])
    c2 = int(counts[order[1]]) if len(order) > 1 else 0
    from scipy.stats import binomtest

    if binomtest(c1, c1 + c2, 0.5).pvalue > alpha:
        return ABSTAIN
    return order[0]


@torch.no_grad()
def count_classes(
    model: nn.Module,
    x: torch.Tensor,
    num: int,
    perturb,
    batch_size: int = 1000,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Class counts (N, K) of the model's predictions on `num` perturbed copies of each image.

    The N * num copies are laid out image after image and cut into batches of `batch_size`, so
    several images share a batch when num is small. `perturb(batch, first, last)` receives the
    clean copies (images first..last of x, repeated) and returns the perturbed batch. Conv nets
    run channels-last for the duration (faster on CPU and CUDA, as the attacks do).
    """
    with channels_last(model) as cl:
        return _count_classes(model, x, num, perturb, batch_size, num_classes, cl)


def _count_classes(model, x, num, perturb, batch_size, num_classes, cl: bool) -> torch.Tensor:
    device = model_device(model)
    x = x.to(device)
    total = len(x) * num
    counts = None if num_classes is None else torch.zeros(len(x), num_classes, dtype=torch.long)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        first, last = start // num, (stop - 1) // num
        if first == last:  # one image: broadcast instead of gathering copies
            clean = x[first].expand(stop - start, *x.shape[1:])
        else:
            clean = x[torch.arange(start, stop, device=device) // num]
        batch = perturb(clean, first, last)
        logits = model(to_channels_last(batch) if cl else batch)
        pred = logits.argmax(1)
        if counts is None:
            counts = torch.zeros(len(x), logits.shape[1], dtype=torch.long)
        idx = torch.arange(start, stop, device=pred.device) // num * counts.shape[1] + pred
        counts.view(-1).index_add_(0, idx.cpu(), torch.ones(len(idx), dtype=torch.long))
    if counts is None:
        counts = torch.zeros(len(x), num_classes or 1, dtype=torch.long)
    return counts


def gaussian_noise(sigma: float, generator: torch.Generator):
    """A `perturb` for count_classes: clean + sigma * N(0, I), the noise drawn on the generator's device."""

    def perturb(clean: torch.Tensor, first: int, last: int) -> torch.Tensor:
        layout = torch.channels_last if clean.dim() == 4 else torch.contiguous_format
        noise = torch.empty(clean.shape, device=generator.device, dtype=clean.dtype, memory_format=layout)
        return noise.normal_(generator=generator).to(clean.device).mul_(sigma).add_(clean)

    return perturb


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one image, with PREDICT's answer on the same n estimation samples."""

    prediction: int  # cA, or ABSTAIN (-1) when pA < 1/2
    radius: float  # sigma * Phi^-1(pA); 0.0 when abstaining
    p_lower: float  # the Clopper-Pearson lower bound pA
    count: int  # nA: estimation samples classified cA
    smoothed: int  # PREDICT's answer (ABSTAIN when the top-two binomial test fails)


class Smooth:
    """A smoothed classifier around `model` at noise level sigma (pixels in [0, 1])."""

    def __init__(
        self, model: nn.Module, sigma: float, batch_size: int = 1000, num_classes: int | None = None
    ):
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ConfigError(f"sigma must be > 0; got {sigma!r}")
        self.model, self.sigma, self.batch_size, self.num_classes = (
            model,
            float(sigma),
            batch_size,
            num_classes,
        )

    def _counts(self, x: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return count_classes(
                self.model, x, num, gaussian_noise(self.sigma, generator), self.batch_size, self.num_classes
            )
        finally:
            self.model.train(was_training)

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, generator: torch.Generator
    ) -> list[Certificate]:
        """CERTIFY each image of x (N, C, H, W): select on n0 samples, estimate on n fresh ones."""
        check_smoothing(self.sigma, n0, n, alpha)
        selected = self._counts(x, n0, generator).argmax(1)
        counts = self._counts(x, n, generator)
        out = []
        for c_a, row in zip(selected.tolist(), counts):
            n_a = int(row[c_a])
            p_a = lower_confidence_bound(n_a, n, alpha)
            smoothed = predict_from_counts(row, alpha)
            if p_a < 0.5:
                out.append(Certificate(ABSTAIN, 0.0, p_a, n_a, smoothed))
            else:
                out.append(Certificate(c_a, radius_of(self.sigma, p_a), p_a, n_a, smoothed))
        return out

    def predict(self, x: torch.Tensor, n: int, alpha: float, generator: torch.Generator) -> list[int]:
        """PREDICT each image of x: the top class of n samples, or ABSTAIN (-1)."""
        check_alpha(alpha)
        return [predict_from_counts(row, alpha) for row in self._counts(x, n, generator)]
