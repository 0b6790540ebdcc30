"""Sharpness-aware minimisation (Foret et al., ICLR 2021) as a wrapper around any optimiser.

One step, given the gradient g of the loss at w (already in `.grad`):

    e = rho * g / ||g||            ascend to the worst point of the rho-ball (first order)
    g' = grad L(w + e)             a second forward/backward pass, at w + e
    w <- base_step(w, g')          the wrapped optimiser updates w itself with g'

The second pass leaves batch-norm running statistics alone (they are updated by the first pass
only, as Foret et al. do), and pruning masks are re-applied after every step, so a pruned weight
never grows back through the ascent, momentum or weight decay. Any objective works: the second
pass simply calls the same `closure`. Learning-rate schedules and checkpoints keep talking to the
wrapped optimiser (`sam.base`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustcompress.errors import ConfigError
from robustcompress.training.robust_objectives import frozen_norm_statistics


class SAM:
    """`SAM(base_optimizer, model, rho).step(closure)`: a sharpness-aware step of `base_optimizer`.

    `closure()` computes the loss on the same batch and calls `backward()` (the fit loop passes
    its objective); `grad_clip` clips the second gradient before the base step.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        model: nn.Module,
        rho: float = 0.05,
        grad_clip: float | None = None,
    ):
        if not rho > 0:
            raise ConfigError(f"SAM rho must be > 0; got {rho}")
        self.base, self.model, self.rho, self.grad_clip = base, model, float(rho), grad_clip
        self.params = [p for group in base.param_groups for p in group["params"]]
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def param_groups(self):
        return self.base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def perturbation(self) -> dict[torch.Tensor, torch.Tensor]:
        """The ascent e(w) for every parameter with a gradient; subclasses change the ascent point."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return {}
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = self.rho / (norm + 1e-12)
        return {p: p.grad * scale for p in self.params if p.grad is not None}

    @torch.no_grad()
    def ascend(self) -> None:
        """Move every parameter to its ascent point, remembering where it was."""
        self._saved = [(p, p.detach().clone()) for p in self.params if p.grad is not None]
        for p, e in self.perturbation().items():
            p.add_(e)

    @torch.no_grad()
    def descend(self) -> None:
        """Back to w (copied, not subtracted: no rounding drift), keeping the gradient taken at the ascent."""
        for p, old in self._saved:
            p.copy_(old)
        self._saved = []

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The ascent, the second pass (`closure`, statistics frozen), the base step, masks re-applied."""
        self.ascend()
        self.base.zero_grad(set_to_none=True)
        try:
            with torch.enable_grad(), frozen_norm_statistics(self.model):
                loss = closure()
        finally:
            self.descend()
        self.finish_gradients()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.base.step()
        reapply_masks(self.model)
        return loss

    def finish_gradients(self) -> None:
        """Hook between the second pass and the base step (CrAM adds its own terms here)."""


@torch.no_grad()
def reapply_masks(model: nn.Module) -> None:
    """Let every parametrization that constrains its stored tensor re-impose that constraint.

    A pruning mask's effective weight is zero anyway; zeroing the stored original too keeps momentum
    and weight decay from giving a pruned entry a value that a later mask removal would expose.
    Parametrizations declare this capability with a `constrain_(original)` method (the pruning
    mask does), so training needs no knowledge of compression's types.
    """
    from torch.nn.utils import parametrize

    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for plist in module.parametrizations.values():
            for p in plist:
                constrain = getattr(p, "constrain_", None)
                if constrain is not None:
                    constrain(plist.original)
