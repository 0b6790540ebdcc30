"""Carlini-Wagner L2 (2017): the smallest L2 perturbation that flips the decision, by optimisation.

Works in tanh space (so the box [0, 1] holds without clipping), minimises ||delta||^2 + c * f with
f = max(z_y - max_{i != y} z_i, -kappa), and binary-searches c per example. It returns each
example's smallest successful point; the base then projects it onto the eps-ball, so robust
accuracy at eps counts the examples whose minimal perturbation found is larger than eps.
"""

from __future__ import annotations

import torch

from robustcompress.attacks.base import Attack, margin, register_attack
from robustcompress.errors import ConfigError


@register_attack("cw")
class CarliniWagnerL2(Attack):
    """steps: Adam steps per search round; search_steps: rounds of the binary search on c."""

    norms = ("l2",)

    def __init__(
        self,
        model,
        eps,
        *,
        steps: int = 100,
        search_steps: int = 5,
        lr: float = 0.01,
        c: float = 1.0,
        kappa: float = 0.0,
        **kwargs,
    ):
        kwargs.setdefault("norm", "l2")
        super().__init__(model, eps, **kwargs)
        if steps < 1 or search_steps < 1 or lr <= 0 or c <= 0:
            raise ConfigError("cw needs steps >= 1, search_steps >= 1, lr > 0 and c > 0")
        self.steps, self.search_steps, self.lr, self.c, self.kappa = steps, search_steps, lr, c, kappa

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((n,), self.c, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), float("inf"), device=x.device)
        best_dist = torch.full((n,), float("inf"), device=x.device)
        best = x.clone()
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                with torch.enable_grad(), self.estimator.context(self.model):
                    x_adv = (torch.tanh(w) + 1) / 2
                    logits = self.model(x_adv)
                    m = -margin(logits, target) if self.targeted else margin(logits, y)
                    dist = (x_adv - x).flatten(1).pow(2).sum(1)
                    loss = (dist + c * m.clamp(min=-self.kappa)).sum()
                    (w.grad,) = torch.autograd.grad(loss, w)
                opt.step()
                with torch.no_grad():
                    ok = self.success(logits.detach(), y, target)
                    closer = ok & (dist.detach() < best_dist)
                    best_dist[closer] = dist.detach()[closer]
                    best[closer] = x_adv.detach()[closer]
                    found |= ok
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(upper.isinf(), c * 10, (lower + upper) / 2)
        return best
