"""Adversarial robustness: robust accuracy per attack, the per-example worst case over a suite,
accuracy-versus-eps curves, and gradient-masking checks that warn in the results and on the console.

Metric names (eps written by `format_eps`: at most 4 decimals, trailing zeros dropped, so 0.1 ->
"0.1", 8/255 -> "0.0314", 0.5 -> "0.5", 2 -> "2"):
  acc.<attack>_<norm>_<eps>   e.g. acc.pgd_linf_0.1, acc.apgd-t_linf_0.0314
  acc.worst_<norm>_<eps>      examples that survive every attack of the suite
  flag.<check>                a message, only when a gradient-masking check fires
  adv.n_examples, adv.clean_acc, adv.seconds

With `cascade` (the default, as AutoAttack) each attack only re-attacks the examples that every
earlier attack left correctly classified, so acc.<attack> is the running worst case after that
attack; without it every attack runs on all clean-correct examples and acc.<attack> is its own.
White-box attacks always run before black-box ones (square, transfer).

Modules, one job each: results (metric names, RobustnessReport), suites (which attacks, their
settings), cascade (running them: evaluate_robustness, robust_accuracy, accuracy_curve), sanity
(the gradient-masking checks), plots, evaluate (the registered `adversarial` evaluation).
"""

from robustcompress.evaluation.adversarial.cascade import (
    accuracy_curve,
    evaluate_robustness,
    robust_accuracy,
)
from robustcompress.evaluation.adversarial.evaluate import (
    ADVERSARIAL_METRICS,
    AdversarialEvalConfig,
    evaluate_adversarial,
    surrogate_for,
)
from robustcompress.evaluation.adversarial.plots import plot_accuracy_curves
from robustcompress.evaluation.adversarial.results import RobustnessReport, format_eps, metric_name
from robustcompress.evaluation.adversarial.sanity import large_eps, sanity_flags
from robustcompress.evaluation.adversarial.suites import attack_correct, build_attack_params, expand_suite

__all__ = [
    "ADVERSARIAL_METRICS",
    "AdversarialEvalConfig",
    "RobustnessReport",
    "accuracy_curve",
    "attack_correct",
    "build_attack_params",
    "evaluate_adversarial",
    "evaluate_robustness",
    "expand_suite",
    "format_eps",
    "large_eps",
    "metric_name",
    "plot_accuracy_curves",
    "robust_accuracy",
    "sanity_flags",
    "surrogate_for",
]
