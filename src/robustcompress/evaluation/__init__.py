"""Evaluations: clean accuracy, adversarial robustness, corruption robustness, efficiency and size."""

from robustcompress.evaluation.clean import accuracy, predict
from robustcompress.evaluation.registry import (
    EVALUATIONS,
    EvalConfig,
    EvalContext,
    Metrics,
    register_evaluation,
)

__all__ = [
    "EVALUATIONS",
    "EvalConfig",
    "EvalContext",
    "Metrics",
    "accuracy",
    "predict",
    "register_evaluation",
]
