"""Evaluations: named functions (model, cfg, ctx) -> {metric name: value}, each declaring the
metrics it produces (MetricSpec: kind, direction, unit) and the context it needs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from robustcompress.config_base import StrictConfig
from robustcompress.registry import Registry

Metrics = dict[str, float | int | str]


class EvalConfig(StrictConfig):
    """Base of every evaluation config."""


@dataclass
class EvalContext:
    data: Any  # robustcompress.data.DataSplits; evaluations use data.test
    device: torch.device
    seed: int = 0
    parent: nn.Module | None = None  # the uncompressed baseline, if any
    baseline_metrics: dict[str, Any] | None = None  # the baseline's metrics (e.g. for mCE)
    workdir: Path | None = None
    log: Callable[[str], None] = field(default=lambda msg: None)
    latency_phase: bool = False  # a study times latency afterwards, all its models together


Better = Literal["higher", "lower", "none"]
NEEDS = ("parent", "baseline_metrics")


@dataclass(frozen=True)
class MetricSpec:
    """What the metrics whose names match `pattern` (fnmatch, e.g. "acc.*_linf_*") mean.

    kind: a short word ("accuracy", "error", "size", "latency", "count", "flag", "ratio", ...);
    better: the direction of improvement; unit: how values read, which the report uses to show
    them: "fraction" (a share in [0, 1], shown in %), "score" (100 = the baseline), "x" (a ratio),
    "bytes", "ms", "s", or "" (a plain number).
    """

    pattern: str
    kind: str
    better: Better = "none"
    unit: str = ""
    description: str = ""

    def __post_init__(self):
        if self.better not in ("higher", "lower", "none"):
            raise ValueError(f"MetricSpec {self.pattern!r}: better must be higher, lower or none")

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class EvaluationDef:
    name: str
    config_cls: type[EvalConfig]
    run: Callable[[nn.Module, EvalConfig, EvalContext], Metrics]
    metrics: tuple[MetricSpec, ...] = ()  # what it produces, most specific pattern first
    needs: frozenset[str] = frozenset()  # context fields it uses when present: "parent", "baseline_metrics"


EVALUATIONS: Registry[EvaluationDef] = Registry("evaluation")

# Naming conventions for metrics no evaluation declares (training summaries, plugins without specs).
CONVENTIONS = (
    MetricSpec("acc.*", "accuracy", "higher", "fraction", "an accuracy"),
    MetricSpec("err.*", "error", "lower", "fraction", "an error rate"),
    MetricSpec("flag.*", "flag", "none", "", "a warning message"),
    MetricSpec("*.seconds", "time", "none", "s", "wall time"),
)


def register_evaluation(
    name: str,
    config_cls: type[EvalConfig],
    metrics: Sequence[MetricSpec] = (),
    needs: Sequence[str] | str = (),
):
    """Decorator: `@register_evaluation("clean", CleanConfig, metrics=[MetricSpec(...)])` on
    `fn(model, cfg, ctx) -> metrics`. `needs`: the context fields it uses ("parent",
    "baseline_metrics"), so a pipeline prepares them only for evaluations that read them."""
    needs = (needs,) if isinstance(needs, str) else tuple(needs)
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"evaluation {name!r} needs unknown context {unknown}; choose from {list(NEEDS)}")

    def add(fn):
        EVALUATIONS.register(name)(EvaluationDef(name, config_cls, fn, tuple(metrics), frozenset(needs)))
        return fn

    return add


def _declared(name: str) -> tuple[str, MetricSpec] | None:
    """Each evaluation's first spec matching `name`; of those the most specific (most literal
    characters), so `flag.latency.*` (efficiency) beats adversarial's catch-all `flag.*` whatever
    the registration order; ties go to the first registered."""
    found = []
    for evaluation in EVALUATIONS:
        spec = next((s for s in EVALUATIONS.get(evaluation).metrics if s.matches(name)), None)
        if spec is not None:
            found.append((evaluation, spec))
    return max(found, key=lambda f: len(f[1].pattern.replace("*", "")), default=None)


def metric_info(name: str) -> MetricSpec | None:
    """The spec of a metric name: the first match among the registered evaluations' specs, then
    the naming CONVENTIONS; None when nothing describes it."""
    found = _declared(name)
    if found is not None:
        return found[1]
    return next((spec for spec in CONVENTIONS if spec.matches(name)), None)


def producer(name: str) -> str | None:
    """The evaluation that declares the metric `name` (None: none does)."""
    found = _declared(name)
    return found[0] if found else None
