"""What a metric name means for display: its unit, how to show a change, and which way is better."""

from __future__ import annotations

from typing import Any, Literal

from robustcompress.report.pareto import number

Kind = Literal["fraction", "score", "ratio", "bytes", "count", "ms", "other"]


def metric_kind(name: str) -> Kind:
    """fraction: a share in [0, 1] (accuracy, error, sparsity), shown in % with changes in points;
    score: already in % of the baseline (mCE, CE); ratio: a compression ratio (x);
    bytes / count / ms: amounts, whose changes read best relative to the baseline."""
    if name.startswith(("acc.", "err.", "corruption.acc", "corruption.err")) or name == "sparsity":
        return "fraction"
    if name == "mce" or name.startswith(("mce.", "ce.")):
        return "score"
    if name.startswith("size.ratio"):
        return "ratio"
    if name.startswith("size.bytes"):
        return "bytes"
    if name.startswith("params") or name == "macs":
        return "count"
    if name.startswith("latency."):
        return "ms"
    return "other"


def better(name: str) -> Literal["max", "min"] | None:
    """The direction in which the metric improves, or None when it has none."""
    if name.startswith(("acc.", "corruption.acc", "size.ratio")) or name == "sparsity":
        return "max"
    kind = metric_kind(name)
    if kind in ("score", "bytes", "count", "ms") or name.startswith(("err.", "corruption.err")):
        return "min"
    return None


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
