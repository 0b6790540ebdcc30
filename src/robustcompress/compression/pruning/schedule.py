"""Pruning over time: iterative steps with retraining (paper 002 Alg. 5) and a gradual schedule.

The gradual schedule is the polynomial decay of Zhu & Gupta (2017), as tfmot's PolynomialDecay:
sparsity(t) = final + (initial - final) * (1 - (t - begin) / (end - begin)) ** power, updated
every `frequency` training steps between `begin` and `end` by a fit-loop callback.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robustcompress.compression.pruning.masks import masks_of

PruneFn = Callable[[nn.Module, float], None]


def polynomial_sparsity(
    step: int, begin: int, end: int, initial: float, final: float, power: float = 3.0
) -> float:
    """Target sparsity at `step` (initial before `begin`, final after `end`)."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / max(end - begin, 1)
    return final + (initial - final) * (1.0 - progress) ** power


def iterative_amounts(target: float, steps: int) -> list[float]:
    """The cumulative amounts of Algorithm 5: target / steps, 2 target / steps, ..., target."""
    return [target * (i + 1) / steps for i in range(steps)]


class GradualPruning:
    """fit() callback: prunes to `polynomial_sparsity(step)` every `frequency` steps.

    After each update it clears the optimiser state (momentum, Adam moments) of the newly pruned
    weights, so the stored originals stay zero too.
    """

    def __init__(self, prune: PruneFn, final: float, begin: int, end: int, frequency: int = 50,
                 initial: float = 0.0, power: float = 3.0):  # fmt: skip
        self.prune, self.final, self.initial = prune, final, initial
        self.begin, self.end, self.frequency, self.power = begin, end, max(1, frequency), power
        self.optimizer: torch.optim.Optimizer | None = None
        self.current = 0.0
        self.history: list[tuple[int, float]] = []

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def on_step_end(self, step: int, model: nn.Module) -> None:
        if step < self.begin or (step < self.end and (step - self.begin) % self.frequency):
            return
        target = polynomial_sparsity(step, self.begin, self.end, self.initial, self.final, self.power)
        if target <= self.current:
            return
        self.prune(model, target)
        self.current = target
        self.history.append((step, target))
        clear_pruned_state(model, self.optimizer)


@torch.no_grad()
def clear_pruned_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Zero optimiser state and stored originals where masks are zero."""
    if optimizer is None:
        return
    for name, mask in masks_of(model).items():
        module_name, _, param = name.rpartition(".")
        module = model.get_submodule(module_name)
        original = module.parametrizations[param].original
        original.mul_(mask.to(original.dtype))
        for value in optimizer.state.get(original, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == original.shape:
                value.mul_(mask.to(value.dtype))
