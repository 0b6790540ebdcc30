"""Gradient-masking checks around an attack run (robustcompress.attacks.sanity decides each one)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustcompress.attacks import ATTACKS
from robustcompress.attacks import sanity as checks
from robustcompress.attacks.estimators import GradientEstimator
from robustcompress.evaluation.adversarial.results import RobustnessReport
from robustcompress.evaluation.adversarial.suites import attack_correct


def large_eps(norm: str, x: torch.Tensor) -> float:
    """An eps whose ball holds the whole [0, 1] box: every image is reachable."""
    return 1.0 if norm == "linf" else math.sqrt(x[0].numel())


def sanity_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_ok: torch.Tensor,
    names: list[str],
    report: RobustnessReport,
    masks: dict[float, dict[str, torch.Tensor]],
    attack: Callable[..., Any],
    estimator: GradientEstimator,
    batch_size: int,
    subset: int = 200,
) -> dict[str, str]:
    """Run the gradient-masking checks of robustcompress.attacks.sanity; returns {check: message}."""
    n = len(x)
    flags: dict[str, str] = {}
    white = [a for a in names if ATTACKS.get(a).uses_gradients]
    black = [a for a in names if not ATTACKS.get(a).uses_gradients]
    first = white[0] if white else "pgd"
    few = slice(0, min(subset, n))
    xs, ys, oks = x[few], y[few], clean_ok[few]

    # eps 0: the whole attack machinery (random start, projection, clipping) must change nothing
    acc0 = attack_correct(attack(first, 0.0), xs, ys, batch_size).float().mean().item()
    if msg := checks.check_eps0(oks.float().mean().item(), acc0, len(xs)):
        flags["eps0"] = msg

    # accuracy must not rise with eps, per attack and for the worst case
    for name in [*names, "worst"]:
        curve = {
            e: (report.worst[e] if name == "worst" else report.accuracy[e][name]) for e in report.accuracy
        }
        if len(curve) > 1 and (msg := checks.check_eps_monotone(curve, n, name)):
            flags.setdefault("eps_monotone", msg)

    # an iterative white-box attack must beat one FGSM step
    iterative = [a for a in white if a != "fgsm"]
    for e in report.accuracy:
        if not iterative or e == 0:
            continue
        todo = clean_ok.nonzero().squeeze(1)
        fgsm_ok = torch.zeros_like(clean_ok)
        if todo.numel():
            fgsm_ok[todo] = attack_correct(attack("fgsm", e), x[todo], y[todo], batch_size)
        single = fgsm_ok.float().mean().item()
        for name in iterative:
            if msg := checks.check_steps(
                single, masks[e][name].float().mean().item(), n, f"{name} at eps {e:g}"
            ):
                flags.setdefault("steps", msg)

    # a huge eps must break everything
    # (a fixed PGD-10 probe with its default step size, so a quick user setting cannot trip it)
    big = large_eps(report.norm, x)
    probe = attack("pgd", big, steps=10, step_size=None)
    acc_big = attack_correct(probe, xs, ys, batch_size).float().mean().item()
    if msg := checks.check_large_eps(acc_big, big, len(xs)):
        flags["large_eps"] = msg

    # black-box attacks must not find what the white-box ones missed
    if white and black:
        for e in report.accuracy:
            survivors = clean_ok.clone()
            for a in white:
                survivors &= masks[e][a]
            for b in black:
                extra = (survivors & ~masks[e][b]).float().mean().item()
                if msg := checks.check_blackbox(extra, n, f"{b} at eps {e:g}"):
                    flags.setdefault("blackbox", msg)

    # all-zero input gradients: at the clean points and at random points of the largest ball
    frac = checks.zero_gradient_fraction(model, xs, ys, estimator, batch_size)
    e_max = max(report.accuracy)
    if e_max > 0:
        noisy = attack("pgd", e_max).random_point(xs)
        frac = max(frac, checks.zero_gradient_fraction(model, noisy, ys, estimator, batch_size))
    if msg := checks.check_zero_grad(frac):
        flags["zero_grad"] = msg
    return flags
