"""Simulated (fake) quantization: symmetric weight quantizers and asymmetric activation quantizers.

Weights: symmetric, per output channel or per tensor, integer levels -qmax..qmax with
qmax = 2**(bits-1) - 1 (bits >= 2); 1 bit is sign quantization (+-s, s = mean |w|). Zero always
maps to zero, so pruned weights stay pruned and a clustered layer keeps at most K values.
Activations: asymmetric, levels 0..2**bits - 1 with a zero point, range from a calibration
observer (min-max, moving average, percentile or MSE-optimal clipping).
Rounding uses a straight-through estimator; LSQ makes the weight step size learnable.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from robustcompress.compression.storage import WeightStorage

Observer = Literal["minmax", "moving_average", "percentile", "mse"]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (x.round() - x).detach()


def _grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x - x * factor).detach() + x * factor


def weight_qmax(bits: int) -> int:
    return max(1, 2 ** (bits - 1) - 1)


class WeightFakeQuant(nn.Module):
    """Parametrization: weight -> scale * clamp(round(weight / scale), -qmax, qmax).

    `scale` is a buffer refreshed from the weights in training mode (max |w| per group / qmax) and
    frozen in eval mode; with `lsq` it is a learnable parameter (Esser et al., LSQ). `keep` (optional)
    is a 0/1 mask of weights that may be non-zero: exact zeros of a pruned layer stay zero.
    """

    def __init__(self, bits: int, groups: int, lsq: bool = False, keep: torch.Tensor | None = None):
        super().__init__()
        self.bits, self.groups, self.lsq = bits, groups, lsq
        self.qmax = weight_qmax(bits)
        scale = torch.ones(groups)
        if lsq:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        if keep is not None:
            self.register_buffer("keep", keep.to(torch.uint8))
        else:
            self.keep = None

    def storage(self) -> WeightStorage:
        """Each weight (or, with a codebook, each codebook value) is stored in `bits` bits."""
        return WeightStorage(value_bits=self.bits)

    def _view(self, s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return s.view(-1, *([1] * (w.dim() - 1))) if self.groups > 1 else s.view(*([1] * w.dim()))

    @torch.no_grad()
    def calibrate(self, w: torch.Tensor) -> None:
        """Set the step size from the weights: max |w| / qmax per group (mean |w| for 1 bit)."""
        flat = w.detach().reshape(self.groups, -1).abs()
        if self.bits == 1:
            nz = (flat > 0).sum(1).clamp(min=1)
            s = flat.sum(1) / nz
        else:
            s = flat.amax(1) / self.qmax
        self.scale.data.copy_(torch.where(s > 0, s, torch.ones_like(s)).to(self.scale))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep is not None:
            w = w * self.keep.to(w.dtype)
        if self.training and not self.lsq:
            self.calibrate(w)
        s = self.scale
        if self.lsq and self.training:
            s = _grad_scale(s, 1.0 / ((w.numel() / self.groups * self.qmax) ** 0.5))
        s = self._view(s, w)
        if self.bits == 1:
            return torch.sign(w) * s + (w - w.detach()) * (w.abs() <= s).to(w.dtype)  # STE inside [-s, s]
        return torch.clamp(round_ste(w / s), -self.qmax, self.qmax) * s


class ActFakeQuant(nn.Module):
    """Asymmetric fake quantizer for activations, calibrated by an observer.

    States: `calibrating` (observe, pass through), training (moving-average range update, then
    quantize; QAT), eval (quantize with the frozen range). The range always contains zero.
    """

    def __init__(
        self, bits: int = 8, observer: Observer = "minmax", percentile: float = 99.99, momentum: float = 0.1
    ):
        super().__init__()
        self.bits, self.observer, self.percentile, self.momentum = bits, observer, percentile, momentum
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.calibrating = False
        self._samples: list[torch.Tensor] = []
        self._seen = False

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def start_calibration(self) -> None:
        self.calibrating, self._samples, self._seen = True, [], False

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if not self._seen or self.observer == "minmax":
            new_lo, new_hi = (
                (torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)) if self._seen else (lo, hi)
            )
        else:  # moving average (also the running range of percentile / mse before they finish)
            m = self.momentum
            new_lo, new_hi = (1 - m) * self.lo + m * lo, (1 - m) * self.hi + m * hi
        self.lo.copy_(new_lo)
        self.hi.copy_(new_hi)
        self._seen = True
        if self.observer in ("percentile", "mse"):
            flat = x.detach().flatten()
            if flat.numel() > 16384:  # a fixed stride subsample keeps calibration deterministic and cheap
                flat = flat[:: flat.numel() // 16384 + 1]
            self._samples.append(flat.float().cpu())

    @torch.no_grad()
    def finish_calibration(self) -> None:
        self.calibrating = False
        if self._samples:
            sample = torch.cat(self._samples)
            if sample.numel() > 65536:
                sample = sample[:: sample.numel() // 65536 + 1]
            if self.observer == "percentile":
                q = torch.tensor([(100 - self.percentile) / 100, self.percentile / 100])
                lo, hi = torch.quantile(sample, q.to(sample.dtype))
            else:
                lo, hi = _mse_range(sample, self.bits)
            self.lo.fill_(float(lo))
            self.hi.fill_(float(hi))
        self._samples = []

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = torch.clamp(self.lo, max=0), torch.clamp(self.hi, min=0)
        scale = torch.clamp((hi - lo) / self.levels, min=1e-8)
        zero = torch.clamp(torch.round(-lo / scale), 0, self.levels)
        return scale, zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self._observe(x)
            return x
        if self.training:
            with torch.no_grad():
                m = self.momentum
                self.lo.mul_(1 - m).add_(m * x.detach().min())
                self.hi.mul_(1 - m).add_(m * x.detach().max())
        scale, zero = self.qparams()
        q = torch.clamp(round_ste(x / scale) + zero, 0, self.levels)
        return (q - zero) * scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}, observer={self.observer}"


def _fake_asym(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / levels, 1e-8)
    zero = min(max(round(-lo / scale), 0), levels)
    return (torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale


def _mse_range(sample: torch.Tensor, bits: int, steps: int = 32) -> tuple[float, float]:
    """Clipping range minimising the quantization MSE over shrinking fractions of [min, max]."""
    lo, hi = float(sample.min()), float(sample.max())
    best, best_err = (lo, hi), float("inf")
    for i in range(steps):
        frac = 1.0 - i / (steps + 1) * 0.9
        err = (_fake_asym(sample, lo * frac, hi * frac, bits) - sample).pow(2).mean().item()
        if err < best_err:
            best, best_err = (lo * frac, hi * frac), err
    return best


def quantize_input_hook(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: pass a layer's input through its `input_quant` submodule."""
    return (module.input_quant(args[0]), *args[1:])
