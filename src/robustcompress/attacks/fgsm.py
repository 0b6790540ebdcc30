"""FGSM: one step of size eps along the sign of the loss gradient (Goodfellow et al.; paper 002, Eq. 8)."""

from __future__ import annotations

import torch

from robustcompress.attacks.base import Attack, register_attack, steepest_direction


@register_attack("fgsm")
class FGSM(Attack):
    """x_adv = x + eps * sign(grad_x loss) for L-inf (eps * g / ||g||_2 for L2), then clipped to [0, 1]."""

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        _, grad, _ = self.gradient(x, y, target)
        return x + self.eps * steepest_direction(grad, self.norm)
