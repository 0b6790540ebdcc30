"""The Attack base class: everything an attack needs except its own step.

The base owns eval mode, the device, the [0, 1] box and the eps-ball projection, seeding (one
torch.Generator per attack, drawn on the CPU so CPU and CUDA runs see the same noise), targeted
handling, gradient estimators, and restarts that keep each example's worst case. A subclass
implements `run(x, y, target) -> x_adv` on one batch already on the model's device.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.attacks.estimators import GradientEstimator, make_estimator
from robustcompress.device import channels_last, model_device, to_channels_last
from robustcompress.errors import ConfigError
from robustcompress.modes import eval_mode
from robustcompress.registry import Registry

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")

ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str):
    """Class decorator: `@register_attack("pgd")` adds an Attack subclass to ATTACKS."""

    def add(cls):
        cls.name = name
        return ATTACKS.register(name)(cls)

    return add


def make_attack(name: str, model: nn.Module, eps: float, **params: Any) -> Attack:
    """Build a registered attack by name; unknown parameters raise a ConfigError naming the allowed ones."""
    cls = ATTACKS.get(name)
    allowed = attack_parameters(cls)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"attack {name!r} has no parameter(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return cls(model, eps, **params)


def attack_parameters(cls: type[Attack]) -> set[str]:
    """Keyword parameters an attack class accepts (its own and the base's)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "model", "eps"):
                names.add(p.name)
    return names


def flat_norm(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of a batch, shaped (N, 1, 1, ...) for broadcasting."""
    flat = t.flatten(1)
    value = flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)
    return value.view(-1, *([1] * (t.dim() - 1)))


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float | torch.Tensor, norm: Norm) -> torch.Tensor:
    """Nearest point to x_adv inside the eps-ball around x (for L2: radial scaling) and the [0, 1] box."""
    delta = x_adv - x
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, torch.as_tensor(eps)), -torch.as_tensor(eps))
    else:
        n = flat_norm(delta, "l2")
        delta = delta * torch.clamp(eps / (n + 1e-12), max=1.0)
    return (x + delta).clamp_(0.0, 1.0)


def steepest_direction(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Unit step of steepest ascent for the norm: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    return g / (flat_norm(g, "l2") + 1e-12)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i per example: positive when y wins."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


class Attack:
    """Base of every attack: call it on a batch `attack(x, y)` to get adversarial images in [0, 1].

    eps: radius of the perturbation ball in pixel space ([0, 1] scale); norm: "linf" or "l2".
    targeted: aim at `target` labels (random wrong classes from the generator when none are given).
    restarts: run the attack again on the examples it has not fooled yet, keeping per example the
        first success, else the point with the largest margin loss.
    estimator: how gradients pass through non-differentiable models ("ste", a BPDA or EOT object).
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = NORMS
    supports_targeted: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = True  # False: black-box (score or transfer based)

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        norm: Norm = "linf",
        targeted: bool = False,
        restarts: int = 1,
        seed: int = 0,
        generator: torch.Generator | None = None,
        estimator: GradientEstimator | str | None = None,
    ):
        if norm not in self.norms:
            raise ConfigError(f"attack {self.name!r} supports norm {', '.join(self.norms)}; got {norm!r}")
        if not (eps >= 0 and math.isfinite(eps)):
            raise ConfigError(f"eps must be a finite number >= 0; got {eps!r}")
        if targeted and not self.supports_targeted:
            raise ConfigError(f"attack {self.name!r} has no targeted mode; drop targeted=True")
        if restarts < 1:
            raise ConfigError(f"restarts must be >= 1; got {restarts}")
        self.model = model
        self.eps = float(eps)
        self.norm: Norm = norm
        self.targeted = targeted
        self.restarts = restarts
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.estimator = make_estimator(estimator)
        self.device = model_device(model)

    # -- public ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(x, y, target)[0]

    def perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial images for one batch and the model's predictions on them (both on x's device)."""
        home = x.device
        x = x.detach().to(self.device).clamp(0.0, 1.0)
        y = y.to(self.device)
        if self.targeted:
            target = self.random_targets(x, y) if target is None else target.to(self.device)
        elif target is not None:
            raise ConfigError("a target was given to an untargeted attack; build it with targeted=True")
        with eval_mode(self.model), channels_last(self.model) as fast:
            if fast:
                x = to_channels_last(x)
            best = x.clone()
            with torch.no_grad():
                best_logits = self.model(best)
            fooled = self.success(best_logits, y, target)
            best_score = self.score(best_logits, y, target)
            for _ in range(self.restarts):
                todo = (~fooled).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                t = None if target is None else target[todo]
                x_adv = project(x[todo], self.run(x[todo], y[todo], t).detach(), self.eps, self.norm)
                with torch.no_grad():
                    logits = self.model(x_adv)
                ok = self.success(logits, y[todo], t)
                score = self.score(logits, y[todo], t)
                better = ok | (score > best_score[todo])
                keep = todo[better]
                best[keep] = x_adv[better]
                best_logits[keep] = logits[better]
                best_score[keep] = score[better]
                fooled[keep] = ok[better]
        return best.to(home).contiguous(), best_logits.argmax(1).to(home)

    def generate(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """One run on every example, in the model's current mode: for adversarial training.

        Unlike `perturb` it neither skips misclassified examples nor restarts nor re-evaluates.
        """
        if self.targeted and target is None:
            target = self.random_targets(x, y)
        with channels_last(self.model) as fast:
            xr = to_channels_last(x.detach()) if fast else x.detach()
            x_adv = project(xr, self.run(xr, y, target).detach(), self.eps, self.norm)
        return x_adv.contiguous()

    # -- for subclasses -------------------------------------------------------------------------
    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The attack itself on one batch (model in eval mode, tensors on its device)."""
        raise NotImplementedError

    def success(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == target if self.targeted else pred != y

    def score(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """How close an example is to success (larger is closer): the negative margin."""
        return margin(logits, target) if self.targeted else -margin(logits, y)

    def objective(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str = "ce"
    ) -> torch.Tensor:
        """Per-example loss the attack ascends: CE (or margin) away from y, or towards the target."""
        if loss == "ce":
            if self.targeted:
                return -F.cross_entropy(logits, target, reduction="none")
            return F.cross_entropy(logits, y, reduction="none")
        if loss == "margin":
            return self.score(logits, y, target)
        raise ConfigError(f"unknown attack loss {loss!r}; use ce or margin")

    def gradient(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str = "ce"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-example loss, input gradient, logits) through the gradient estimator (EOT averages)."""
        samples = self.estimator.samples
        grad = None
        total = None
        with torch.enable_grad(), self.estimator.context(self.model):
            for _ in range(samples):
                xr = x.detach().requires_grad_(True)
                logits = self.model(xr)
                value = loss(logits, y, target) if callable(loss) else self.objective(logits, y, target, loss)
                g = torch.autograd.grad(value.sum(), xr)[0]
                grad = g if grad is None else grad + g
                total = value.detach() if total is None else total + value.detach()
        if samples > 1:
            grad, total = grad / samples, total / samples
        return total, grad, logits.detach()

    def rand(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """Uniform [0, 1) noise from the attack's generator, moved to the model's device."""
        return torch.rand(shape, generator=self.generator).to(self.device)

    def randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def random_point(self, x: torch.Tensor) -> torch.Tensor:
        """A uniformly random point of the eps-ball (L-inf) or a random direction and radius (L2)."""
        if self.norm == "linf":
            delta = (2 * self.rand(x.shape) - 1) * self.eps
        else:
            d = self.randn(x.shape)
            radius = self.rand((x.shape[0],)).view(-1, *([1] * (x.dim() - 1)))
            delta = d / (flat_norm(d, "l2") + 1e-12) * radius * self.eps
        return (x + delta).clamp(0.0, 1.0)

    def random_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A random wrong class per example (for targeted attacks given no targets)."""
        with torch.no_grad():
            classes = self.model(x[:1]).shape[1]
        shift = torch.randint(1, classes, y.shape, generator=self.generator).to(y.device)
        return (y + shift) % classes

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g}, norm={self.norm}, targeted={self.targeted})"
