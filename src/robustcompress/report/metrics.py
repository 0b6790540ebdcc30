"""What a metric name means for display: its unit, how to show a change, and which way is better,
read from the MetricSpecs the evaluations register (robustcompress.evaluation.registry)."""

from __future__ import annotations

from typing import Any, Literal

from robustcompress.evaluation.registry import metric_info
from robustcompress.plugins import load_plugins
from robustcompress.report.pareto import number

load_plugins()  # every built-in evaluation's metric specs

Kind = Literal["fraction", "score", "ratio", "bytes", "count", "ms", "other"]

_BY_UNIT: dict[str, Kind] = {
    "fraction": "fraction",
    "score": "score",
    "x": "ratio",
    "bytes": "bytes",
    "ms": "ms",
}


def metric_kind(name: str) -> Kind:
    """How to show a metric, from the unit its evaluation declares (evaluation.registry.metric_info):
    fraction: a share in [0, 1] (accuracy, error, sparsity), shown in % with changes in points;
    score: already in % of the baseline (mCE, CE); ratio: a compression ratio (x);
    bytes / count / ms: amounts, whose changes read best relative to the baseline."""
    spec = metric_info(name)
    if spec is None:
        return "other"
    return _BY_UNIT.get(spec.unit) or ("count" if spec.kind == "count" else "other")


def better(name: str) -> Literal["max", "min"] | None:
    """The direction in which the metric improves, as its evaluation declares, or None."""
    spec = metric_info(name)
    return {"higher": "max", "lower": "min"}.get(spec.better) if spec else None


def format_value(name: str, value: Any) -> str:
    if value is None:
        return "-"
    v = number(value)
    if v is None:
        return str(value)
    kind = metric_kind(name)
    if kind == "fraction":
        return f"{100 * v:.2f}%"
    if kind == "score":
        return f"{v:.1f}"
    if kind == "ratio":
        return f"{v:.2f}x"
    if kind == "bytes":
        return _scaled(v, ["B", "kB", "MB", "GB"], 1000, " ")
    if kind == "count":
        return _scaled(v, ["", "k", "M", "G"], 1000, "")
    if kind == "ms":
        return f"{v:.3g} ms"
    return f"{int(v)}" if v.is_integer() else f"{v:.4g}"


def format_delta(name: str, value: Any, base: Any) -> str | None:
    """The change from the baseline in the metric's own terms, or None when it cannot be said."""
    v, b = number(value), number(base)
    if v is None or b is None:
        return None
    kind = metric_kind(name)
    if kind == "fraction":
        return f"{100 * (v - b):+.2f} pts"
    if kind == "score":
        return f"{v - b:+.1f}"
    if kind == "ratio":
        return f"{v - b:+.2f}x"
    if kind in ("bytes", "count", "ms"):
        return f"{100 * (v - b) / b:+.1f}%" if b else None
    return f"{v - b:+.4g}"


def delta_sign(name: str, value: Any, base: Any) -> int:
    """+1 when the change is an improvement, -1 when it is worse, 0 when equal or undirected."""
    v, b, direction = number(value), number(base), better(name)
    if v is None or b is None or direction is None or v == b:
        return 0
    return 1 if (v > b) == (direction == "max") else -1


def _scaled(v: float, units: list[str], step: float, sep: str) -> str:
    i = 0
    while abs(v) >= step and i < len(units) - 1:
        v /= step
        i += 1
    text = f"{int(v)}" if i == 0 and v.is_integer() else f"{v:.3g}"
    return f"{text}{sep}{units[i]}"
