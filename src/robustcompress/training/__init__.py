"""Training: the fit loop, its config, and pluggable objectives."""

from robustcompress.training.objectives import OBJECTIVES, make_objective, register_objective

__all__ = ["OBJECTIVES", "make_objective", "register_objective"]
