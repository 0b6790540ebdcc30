"""Transfer attack: adversarial examples crafted on a surrogate (e.g. the uncompressed parent).

This is how a model without autograd (a real integer model) or with masked gradients is attacked:
craft on its float twin, evaluate on the target. For the target it is a black-box attack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustcompress.attacks.base import ATTACKS, Attack, make_attack, register_attack
from robustcompress.device import model_device
from robustcompress.errors import ConfigError


@register_attack("transfer")
class Transfer(Attack):
    """Runs `attack` (default PGD) with `attack_params` on `surrogate`, returns its examples."""

    uses_gradients = False

    def __init__(
        self,
        model,
        eps,
        *,
        surrogate: nn.Module | None = None,
        attack: str = "pgd",
        attack_params: dict[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__(model, eps, **kwargs)
        if surrogate is None:
            raise ConfigError("the transfer attack needs a surrogate model (e.g. transfer_from='parent')")
        if attack == "transfer" or attack not in ATTACKS:
            raise ConfigError(f"transfer attack {attack!r} is not a registered attack: {', '.join(ATTACKS)}")
        self.surrogate = surrogate
        self.inner = make_attack(
            attack,
            surrogate,
            self.eps,
            norm=self.norm,
            targeted=self.targeted,
            generator=self.generator,
            **(attack_params or {}),
        )

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        device = model_device(self.surrogate)
        x_adv, _ = self.inner.perturb(
            x.to(device), y.to(device), None if target is None else target.to(device)
        )
        return x_adv.to(x.device)
