"""Square attack, L-inf (Andriushchenko et al., ECCV 2020): random search, scores only, no gradients.

Gradient masking cannot fool it, which is why it closes the `standard` suite: it starts from
vertical stripes of +-eps and, query after query, redraws one random square window per image to a
random corner of the ball, keeping the change when the margin loss falls. The window's share of the
image starts at p_init and halves at fixed fractions of the query budget.
"""

from __future__ import annotations

import math

import torch

from robustcompress.attacks.base import Attack, margin, register_attack
from robustcompress.errors import ConfigError

# (fraction of a 10,000-query budget, divisor of p_init) from the paper's schedule
_SCHEDULE = (
    (10, 2),
    (50, 4),
    (200, 8),
    (500, 16),
    (1000, 32),
    (2000, 64),
    (4000, 128),
    (6000, 256),
    (8000, 512),
)


def window_fraction(p_init: float, query: int, queries: int) -> float:
    """Share of pixels the square covers at `query` of `queries` (the paper's piecewise schedule)."""
    i = int(query / queries * 10000)
    divisor = 1
    for start, d in _SCHEDULE:
        if i > start:
            divisor = d
    return p_init / divisor


@register_attack("square")
class Square(Attack):
    """Score-based L-inf attack; `queries` forward passes per example at most (AutoAttack: 5000)."""

    norms = ("linf",)
    uses_gradients = False

    def __init__(self, model, eps, *, queries: int = 5000, p_init: float = 0.8, **kwargs):
        super().__init__(model, eps, **kwargs)
        if queries < 1:
            raise ConfigError(f"square queries must be >= 1; got {queries}")
        if not 0 < p_init <= 1:
            raise ConfigError(f"square p_init must be in (0, 1]; got {p_init}")
        self.queries = queries
        self.p_init = p_init

    @torch.no_grad()
    def _loss(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Lower is better for the attacker; below zero means success."""
        logits = self.model(x)
        return -margin(logits, target) if self.targeted else margin(logits, y)

    @torch.no_grad()
    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        n, c, h, w = x.shape
        signs = torch.where(self.rand((n, c, 1, w)) < 0.5, -1.0, 1.0)
        x_best = (x + self.eps * signs).clamp(0.0, 1.0)
        loss = self._loss(x_best, y, target)
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        for q in range(1, self.queries):
            active = (loss > 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            m = active.numel()
            p = window_fraction(self.p_init, q, self.queries)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h - 1, w - 1)
            top = torch.randint(0, h - s + 1, (m,), generator=self.generator).to(x.device)
            left = torch.randint(0, w - s + 1, (m,), generator=self.generator).to(x.device)
            in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)
            in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
            corner = torch.where(self.rand((m, c, 1, 1)) < 0.5, -1.0, 1.0) * self.eps
            x_a = x[active]
            delta = torch.where(window, corner, x_best[active] - x_a)
            candidate = (x_a + delta).clamp(0.0, 1.0)
            t = None if target is None else target[active]
            new_loss = self._loss(candidate, y[active], t)
            better = new_loss < loss[active]
            idx = active[better]
            x_best[idx] = candidate[better]
            loss[idx] = new_loss[better]
        return x_best
