"""Adversarial attacks in pixel space [0, 1], gradient estimators and gradient-masking checks.

Every attack is an `Attack` subclass registered by name in `ATTACKS`:
fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, square, transfer, cw, deepfool.
"""

from robustcompress.attacks import apgd, cw, deepfool, fgsm, pgd, square, transfer  # noqa: F401  (registers)
from robustcompress.attacks.base import (
    ATTACKS,
    Attack,
    attack_parameters,
    eval_mode,
    make_attack,
    margin,
    project,
    register_attack,
)
from robustcompress.attacks.estimators import BPDA, EOT, GradientEstimator, StraightThrough, make_estimator
from robustcompress.attacks.sanity import GradientMaskingWarning, zero_gradient_fraction

SUITES: dict[str, list[str]] = {
    # AutoAttack's "standard" version without FAB-T: APGD-CE, APGD-T (DLR), Square (L-inf only)
    "standard": ["apgd-ce", "apgd-t", "square"],
}

__all__ = [
    "ATTACKS",
    "BPDA",
    "EOT",
    "SUITES",
    "Attack",
    "GradientEstimator",
    "GradientMaskingWarning",
    "StraightThrough",
    "attack_parameters",
    "eval_mode",
    "make_attack",
    "make_estimator",
    "margin",
    "project",
    "register_attack",
    "zero_gradient_fraction",
]
