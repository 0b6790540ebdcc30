"""Adversarial and margin training objectives: pgd (Madry), fgsm_rs (Wong), trades, mmr (paper 002).

Each is a class whose keyword arguments are its parameters and whose call
`objective(model, x, y) -> (loss, clean_logits)` the fit loop makes with the model in train mode.

Adversarial examples are crafted with the model in eval mode (batch-norm running statistics, no
dropout) by default, then the loss is computed in train mode: this attacks the model as it will be
evaluated, as TRADES' reference code does. `craft = "train"` (pgd, fgsm_rs) crafts them against the
train-mode network the loss sees (batch statistics, dropout), as Madry's and Wong's code do; the
running statistics are left untouched by those extra passes. Random starts come from a generator
seeded by `seed`, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.attacks.base import eval_mode, margin, project, steepest_direction
from robustcompress.attacks.fgsm import FGSM
from robustcompress.attacks.pgd import PGD
from robustcompress.errors import ConfigError
from robustcompress.training.objectives import register_objective


def _check(eps: float, norm: str) -> None:
    if not eps >= 0:
        raise ConfigError(f"objective eps must be >= 0; got {eps}")
    if norm not in ("linf", "l2"):
        raise ConfigError(f"objective norm must be linf or l2; got {norm!r}")


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode forward passes that leave batch-norm running statistics as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield model
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def crafting(model: nn.Module, craft: str):
    """The context adversarial examples are crafted in: eval mode, or train mode with frozen statistics."""
    return eval_mode(model) if craft == "eval" else frozen_norm_statistics(model)


@register_objective("pgd")
class PGDTraining:
    """Madry et al. 2018: cross-entropy on PGD examples only.

    Defaults: eps 0.1 (Fashion-MNIST, paper 003), 10 steps of 2.5 * eps / steps, crafted in eval
    mode. Paper 003's exact setting is steps=20, step_size=0.01.
    """

    def __init__(
        self,
        eps: float = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        seed: int = 0,
        craft: str = "eval",
    ):
        _check(eps, norm)
        if craft not in ("eval", "train"):
            raise ConfigError(f"objective craft must be eval or train; got {craft!r}")
        self.craft = craft
        self.eps, self.steps, self.step_size, self.norm, self.random_start = (
            eps,
            steps,
            step_size,
            norm,
            random_start,
        )
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        attack = PGD(
            model,
            self.eps,
            steps=self.steps,
            step_size=self.step_size,
            norm=self.norm,
            random_start=self.random_start,
            generator=self.generator,
        )
        with crafting(model, self.craft):
            x_adv = attack.generate(x, y)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


@register_objective("fgsm_rs")
class FGSMRandomStart(PGDTraining):
    """Wong et al. 2020 ("fast is better than free"): one FGSM step of size alpha from a random start.

    It is PGD training with one step. Defaults: eps 0.1, alpha = 1.25 * eps (the paper's choice); the
    step is projected back onto the ball.
    """

    def __init__(
        self,
        eps: float = 0.1,
        alpha: float | None = None,
        norm: str = "linf",
        seed: int = 0,
        craft: str = "eval",
    ):
        alpha = 1.25 * eps if alpha is None else alpha
        super().__init__(eps, steps=1, step_size=alpha, norm=norm, random_start=True, seed=seed, craft=craft)
        self.alpha = alpha


@register_objective("trades")
class TRADES:
    """Zhang et al. 2019: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL term.

    Defaults: eps 0.1, 10 steps of eps / 4, beta 6 (the paper's CIFAR-10 setting).
    """

    def __init__(
        self,
        eps: float = 0.1,
        steps: int = 10,
        step_size: float | None = None,
        beta: float = 6.0,
        norm: str = "linf",
        seed: int = 0,
    ):
        _check(eps, norm)
        self.eps, self.steps, self.beta, self.norm = eps, steps, beta, norm
        self.step_size = eps / 4 if step_size is None else step_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x = x.detach()
        with eval_mode(model):
            with torch.no_grad():
                p_clean = F.softmax(model(x), 1)
            noise = torch.randn(x.shape, generator=self.generator).to(x.device)
            x_adv = (x + 0.001 * noise).clamp(0, 1)
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                with torch.enable_grad():
                    kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
                    (g,) = torch.autograd.grad(kl, x_adv)
                step = x_adv.detach() + self.step_size * steepest_direction(g, self.norm)
                x_adv = project(x, step, self.eps, self.norm)
        logits = model(x)
        logits_adv = model(x_adv.detach())
        robust = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.beta * robust, logits


def max_margin_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Paper 002, Eq. 9: mean over the batch of max(0, 1 - (z_y - max_{i != y} z_i))."""
    return F.relu(1 - margin(z, y)).mean()


@register_objective("mmr")
class MaxMarginAdversarial:
    """Paper 002, Algorithm 7: FGSM examples and clean examples in one batch; CE + lambda * MM (Eq. 9-10).

    Defaults from its Table 2: eps 0.03, margin weight 0.1. `on="logits"` applies Eq. 9 to the logits
    as the algorithm does (z = h(X)); `on="probs"` applies it to softmax outputs, which the paper's
    remark "each z_i in [0, 1]" suggests. The FGSM step (Eq. 8, no random start) is clipped to [0, 1].
    """

    def __init__(self, eps: float = 0.03, margin_weight: float = 0.1, on: str = "logits", norm: str = "linf"):
        _check(eps, norm)
        if on not in ("logits", "probs"):
            raise ConfigError(f"mmr 'on' must be logits or probs; got {on!r}")
        if margin_weight < 0:
            raise ConfigError(f"mmr margin_weight must be >= 0; got {margin_weight}")
        self.eps, self.margin_weight, self.on, self.norm = eps, margin_weight, on, norm

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        with eval_mode(model):
            x_adv = FGSM(model, self.eps, norm=self.norm).generate(x, y)
        z = model(torch.cat([x, x_adv]))
        yy = torch.cat([y, y])
        scores = F.softmax(z, 1) if self.on == "probs" else z
        loss = F.cross_entropy(z, yy) + self.margin_weight * max_margin_loss(scores, yy)
        return loss, z[: len(x)]
