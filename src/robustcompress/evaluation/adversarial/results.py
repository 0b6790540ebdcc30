"""Adversarial metric names and the report an attack run fills in."""

from __future__ import annotations

from dataclasses import dataclass, field

from robustcompress.evaluation.registry import Metrics


def format_eps(eps: float) -> str:
    """Short stable text for an eps in metric names: 0.1 -> '0.1', 8/255 -> '0.0314', 2.0 -> '2'."""
    text = f"{eps:.4f}".rstrip("0").rstrip(".")
    if text in ("0", "-0") and eps != 0:
        text = f"{eps:.2e}"
    return text


def metric_name(attack: str, norm: str, eps: float) -> str:
    return f"acc.{attack}_{norm}_{format_eps(eps)}"


@dataclass
class RobustnessReport:
    """What `evaluate_robustness` measured; `metrics()` flattens it into dotted metric names."""

    norm: str
    n_examples: int
    clean_acc: float
    accuracy: dict[float, dict[str, float]] = field(default_factory=dict)  # eps -> attack -> acc
    worst: dict[float, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # attack -> wall time over all eps

    def metrics(self) -> Metrics:
        out: Metrics = {"adv.n_examples": self.n_examples, "adv.clean_acc": self.clean_acc}
        for eps, per_attack in self.accuracy.items():
            for attack, acc in per_attack.items():
                out[metric_name(attack, self.norm, eps)] = acc
            out[metric_name("worst", self.norm, eps)] = self.worst[eps]
        out["adv.seconds"] = round(sum(self.seconds.values()), 3)
        out.update({f"flag.{k}": v for k, v in self.flags.items()})
        return out
