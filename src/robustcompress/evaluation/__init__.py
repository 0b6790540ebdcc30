"""Evaluations: clean accuracy, adversarial robustness, corruption robustness, efficiency and size."""

from robustcompress.evaluation.registry import (
    EVALUATIONS,
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    metric_info,
    register_evaluation,
)
from robustcompress.measure import accuracy, predict

__all__ = [
    "EVALUATIONS",
    "EvalConfig",
    "EvalContext",
    "MetricSpec",
    "Metrics",
    "accuracy",
    "metric_info",
    "predict",
    "register_evaluation",
]

from robustcompress.evaluation import adversarial  # noqa: E402,F401  (registers "adversarial")
