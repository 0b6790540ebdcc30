"""Checks that warn of gradient masking: robustness that comes from a blind attack, not a robust model.

Each check takes numbers an evaluation has measured and returns a message when the sign is there
(None otherwise). They follow the checklist of Carlini et al. 2019 ("On evaluating adversarial
robustness") and Athalye et al. 2018:
- eps0: robust accuracy at eps 0 must equal clean accuracy (else randomness or a pipeline bug);
- eps_monotone: accuracy must not rise as eps grows;
- steps: an iterative attack must not be weaker than a single step (FGSM);
- large_eps: at a very large eps (the whole [0, 1] box) accuracy must fall to about zero;
- blackbox: a black-box or transfer attack must not break points the white-box attacks left standing;
- zero_grad: few examples may have an all-zero input gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.attacks.estimators import GradientEstimator, make_estimator
from robustcompress.device import model_device
from robustcompress.modes import eval_mode

ZERO_GRAD_THRESHOLD = 0.1  # fraction of examples
LARGE_EPS_THRESHOLD = 0.05  # accuracy


class GradientMaskingWarning(UserWarning):
    """A sanity check suggests the reported robustness may be an artefact of masked gradients."""


def tolerance(n: int) -> float:
    """Accuracy difference treated as noise: one point, and never less than 1.5 examples."""
    return max(0.01, 1.5 / max(n, 1))


def check_eps0(clean_acc: float, acc_at_zero: float, n: int) -> str | None:
    if abs(clean_acc - acc_at_zero) > 0.5 / max(n, 1):
        return (
            f"robust accuracy at eps 0 ({acc_at_zero:.4f}) differs from clean accuracy ({clean_acc:.4f}): "
            "the model is random in eval mode or the pipeline alters inputs; for random models use 'eot'"
        )
    return None


def check_eps_monotone(curve: dict[float, float], n: int, what: str = "") -> str | None:
    """curve: eps -> accuracy for one attack."""
    points = sorted(curve.items())
    tol = tolerance(n)
    for (e1, a1), (e2, a2) in zip(points, points[1:]):
        if a2 > a1 + tol:
            return (
                f"{what} accuracy rises from {a1:.4f} at eps {e1:g} to {a2:.4f} at eps {e2:g}: "
                "the attack is blind at larger eps (masked gradients); try estimator 'ste'/'bpda'"
            )
    return None


def check_steps(single_step_acc: float, iterative_acc: float, n: int, what: str = "pgd") -> str | None:
    if iterative_acc > single_step_acc + tolerance(n):
        return (
            f"{what} ({iterative_acc:.4f}) is weaker than one FGSM step ({single_step_acc:.4f}): "
            "more steps should never help the model; its gradients are masked away from clean points"
        )
    return None


def check_large_eps(acc: float, eps: float, n: int) -> str | None:
    if acc > max(LARGE_EPS_THRESHOLD, 2.5 / max(n, 1)):
        return (
            f"accuracy {acc:.4f} at eps {eps:g} (the whole image box) should be about 0: "
            "the attack cannot follow the gradients (rounding, saturation); use estimator='ste' or 'bpda'"
        )
    return None


def check_blackbox(broken_fraction: float, n: int, which: str) -> str | None:
    """broken_fraction: share of all examples broken by `which` after every white-box attack failed."""
    if broken_fraction > tolerance(n):
        return (
            f"{which} broke {broken_fraction:.4f} of the examples that every white-box attack left correct: "
            "gradients mislead the white-box attacks (gradient masking); trust the worst case, not PGD alone"
        )
    return None


def check_zero_grad(fraction: float) -> str | None:
    if fraction > ZERO_GRAD_THRESHOLD:
        return (
            f"{fraction:.1%} of the examples have an all-zero input gradient (rounding, quantization or a "
            "saturated softmax): gradient attacks cannot move them; use estimator='ste'/'bpda' or the suite"
        )
    return None


def zero_gradient_fraction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    estimator: GradientEstimator | str | None = None,
    batch_size: int = 256,
) -> float:
    """Share of examples whose cross-entropy input gradient is exactly zero (model in eval mode)."""
    if len(x) == 0:
        return 0.0
    estimator = make_estimator(estimator)
    device = model_device(model)
    zeros = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).requires_grad_(True)
            yb = y[i : i + batch_size].to(device)
            with torch.enable_grad(), estimator.context(model):
                loss = F.cross_entropy(model(xb), yb, reduction="sum")
                (g,) = torch.autograd.grad(loss, xb, allow_unused=True)
            if g is None:
                zeros += len(xb)
            else:
                zeros += int((g.flatten(1).abs().amax(1) == 0).sum())
    return zeros / len(x)
