"""PGD (Madry et al. 2018): steps of steepest ascent on the loss, projected back onto the eps-ball."""

from __future__ import annotations

import torch

from robustcompress.attacks.base import Attack, project, register_attack, steepest_direction
from robustcompress.errors import ConfigError


@register_attack("pgd")
class PGD(Attack):
    """Projected gradient ascent on cross-entropy (or the margin loss) from a random point of the ball.

    steps: iterations (paper 003 uses 20); step_size: default 2.5 * eps / steps (Madry et al.), so the
    walk can cross the ball; random_start: start uniformly inside the ball (Madry), else at x.
    """

    def __init__(
        self,
        model,
        eps,
        *,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = True,
        loss: str = "ce",
        **kwargs,
    ):
        super().__init__(model, eps, **kwargs)
        if steps < 1:
            raise ConfigError(f"PGD steps must be >= 1; got {steps}")
        if step_size is not None and step_size <= 0:
            raise ConfigError(f"PGD step_size must be > 0; got {step_size}")
        if loss not in ("ce", "margin"):
            raise ConfigError(f"PGD loss must be ce or margin; got {loss!r}")
        self.steps = steps
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / steps
        self.random_start = random_start
        self.loss = loss

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        x_adv = self.random_point(x) if self.random_start else x.clone()
        for _ in range(self.steps):
            _, grad, _ = self.gradient(x_adv, y, target, self.loss)
            x_adv = project(
                x, x_adv + self.step_size * steepest_direction(grad, self.norm), self.eps, self.norm
            )
        return x_adv
