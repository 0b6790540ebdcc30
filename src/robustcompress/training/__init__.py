"""Training: the fit loop, its config, and pluggable objectives."""

from robustcompress.training import robust_objectives  # noqa: F401  (registers pgd, fgsm_rs, trades, mmr)
from robustcompress.training.objectives import OBJECTIVES, make_objective, register_objective

__all__ = ["OBJECTIVES", "make_objective", "register_objective"]
