"""Training: the fit loop, its config, pluggable objectives and the `finetune` stage."""

from robustcompress.training import finetune as _finetune  # noqa: F401  (registers the stage)
from robustcompress.training.config import TrainConfig
from robustcompress.training.loop import TrainResult, fit, make_optimizer
from robustcompress.training.objectives import OBJECTIVES, make_objective, register_objective

__all__ = [
    "OBJECTIVES",
    "TrainConfig",
    "TrainResult",
    "fit",
    "make_objective",
    "make_optimizer",
    "register_objective",
]
