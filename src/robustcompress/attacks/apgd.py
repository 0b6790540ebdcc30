"""Auto-PGD (Croce and Hein, ICML 2020): PGD with momentum and a step size that needs no tuning.

The step starts at 2 * eps and is halved at checkpoints (at 22%, then ever closer, of the budget)
when the loss rose in fewer than 75% of the steps since the last checkpoint, or when the step was
not halved last time and the best loss has not improved since; after a halving the walk restarts
from the best point so far. `apgd-ce` ascends cross-entropy; `apgd-t` ascends the targeted DLR loss
towards each of the `targets` most likely wrong classes in turn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustcompress.attacks.base import Attack, flat_norm, project, register_attack, steepest_direction
from robustcompress.errors import ConfigError

RHO = 0.75  # fraction of loss increases a checkpoint asks for
MOMENTUM = 0.75


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (untargeted): shift- and scale-invariant, so saturation cannot hide it."""
    z, _ = logits.sort(1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = logits.argmax(1) == y
    z_other = torch.where(top_is_y, z[:, -2], z[:, -1])
    return -(z_y - z_other) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z, _ = logits.sort(1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """(first interval, decrement, minimum interval) of the checkpoint schedule, in steps."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


class _APGD(Attack):
    def __init__(self, model, eps, *, steps: int = 100, **kwargs):
        super().__init__(model, eps, **kwargs)
        if steps < 1:
            raise ConfigError(f"APGD steps must be >= 1; got {steps}")
        self.steps = steps

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        """A random point on the sphere of radius eps (as AutoAttack starts)."""
        t = 2 * self.rand(x.shape) - 1 if self.norm == "linf" else self.randn(x.shape)
        return (x + self.eps * t / (flat_norm(t, self.norm) + 1e-12)).clamp(0.0, 1.0)

    def apgd(self, x: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
        """One APGD run ascending loss_fn(logits, y, _) -> per-example loss; returns the best points."""
        n = x.shape[0]
        shape = (n, *([1] * (x.dim() - 1)))
        step = torch.full(shape, 2.0 * self.eps, device=x.device)
        x_adv = self._start(x)
        loss, grad, logits = self.gradient(x_adv, y, None, loss_fn)
        fooled = logits.argmax(1) != y
        x_fool = x_adv.clone()
        best_loss, x_best, grad_best = loss.clone(), x_adv.clone(), grad.clone()
        history = [loss]
        interval, decrement, minimum = checkpoint_lengths(self.steps)
        next_check, last_check = interval, 0
        halved_last = torch.ones(n, dtype=torch.bool, device=x.device)
        best_at_check = best_loss.clone()
        x_prev = x_adv.clone()
        for i in range(self.steps):
            a = MOMENTUM if i > 0 else 1.0
            z = project(x, x_adv + step * steepest_direction(grad, self.norm), self.eps, self.norm)
            x_new = project(x, x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), self.eps, self.norm)
            x_prev, x_adv = x_adv, x_new
            loss, grad, logits = self.gradient(x_adv, y, None, loss_fn)
            hit = logits.argmax(1) != y
            x_fool[hit] = x_adv[hit]
            fooled |= hit
            history.append(loss)
            up = loss > best_loss
            x_best[up], grad_best[up], best_loss[up] = x_adv[up], grad[up], loss[up]
            if i + 1 == next_check:
                window = torch.stack(history[last_check : i + 2])
                increases = (window[1:] > window[:-1]).float().sum(0)
                oscillating = increases < RHO * (i + 1 - last_check)
                stalled = ~halved_last & (best_at_check >= best_loss)
                halve = oscillating | stalled
                halved_last, best_at_check = halve, best_loss.clone()
                if halve.any():
                    step[halve] /= 2.0
                    x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                interval = max(interval - decrement, minimum)
                last_check, next_check = i + 1, i + 1 + interval
        return torch.where(fooled.view(shape), x_fool, x_best)


@register_attack("apgd-ce")
class APGDCE(_APGD):
    """APGD on cross-entropy (untargeted); `steps` iterations (AutoAttack: 100)."""

    supports_targeted = False

    def run(self, x, y, target):
        return self.apgd(x, y, lambda logits, yy, _t: F.cross_entropy(logits, yy, reduction="none"))


@register_attack("apgd-dlr")
class APGDDLR(_APGD):
    """APGD on the untargeted DLR loss."""

    supports_targeted = False

    def run(self, x, y, target):
        return self.apgd(x, y, lambda logits, yy, _t: dlr_loss(logits, yy))


@register_attack("apgd-t")
class APGDT(_APGD):
    """APGD on the targeted DLR loss, once per target among the `targets` most likely wrong classes.

    Untargeted in effect: an example counts as broken when it is misclassified; later targets only
    re-attack the examples earlier ones did not break. Needs at least 4 classes (the DLR denominator).
    """

    supports_targeted = False

    def __init__(self, model, eps, *, targets: int = 9, **kwargs):
        super().__init__(model, eps, **kwargs)
        if targets < 1:
            raise ConfigError(f"apgd-t targets must be >= 1; got {targets}")
        self.targets = targets

    def run(self, x, y, target):
        with torch.no_grad():
            logits = self.model(x)
        classes = logits.shape[1]
        if classes < 4:
            raise ConfigError(
                f"apgd-t needs at least 4 classes (DLR loss); the model has {classes}; use apgd-ce"
            )
        order = logits.sort(1).indices  # ascending: the last is the prediction
        x_best = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for k in range(min(self.targets, classes - 1)):
            t = order[todo, -(k + 2)]
            x_k = self.apgd(x[todo], y[todo], lambda lg, yy, _t, t=t: dlr_targeted_loss(lg, yy, t))
            x_best[todo] = x_k
            with torch.no_grad():
                still = self.model(x_k).argmax(1) == y[todo]
            todo = todo[still]
            if todo.numel() == 0:
                break
        return x_best
