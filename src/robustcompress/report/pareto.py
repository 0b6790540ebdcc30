"""Pareto fronts: which configurations no other configuration beats on every objective.

Paper 000 ranks compression recipes by accuracy (max), mCE (min) and compression ratio (max) and
keeps the non-dominated ones; any list of (metric, "max" | "min") objectives works the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from robustcompress.errors import ConfigError

Objective = tuple[str, str]

# Paper 000's three objectives.
DEFAULT_OBJECTIVES: list[Objective] = [("acc.clean", "max"), ("mce", "min"), ("size.ratio", "max")]


def number(value: Any) -> float | None:
    """The value as a float, or None when it is missing, text or NaN (it cannot be compared)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def pareto_front(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[Objective],
    missing: Literal["exclude", "worst"] = "exclude",
) -> list[int]:
    """Indices (in order) of the rows that no other row dominates on `objectives`.

    Row a dominates row b when a is at least as good on every objective and strictly better on
    one; rows with equal values do not dominate each other, so ties are all on the front.
    A row lacking an objective's metric (absent, text or NaN) is left off the front with
    missing="exclude" (it cannot be compared, and dominates nothing); with missing="worst" it
    counts as worse than every row that has the metric (a row lacking all of them is still left off).
    """
    if not objectives:
        raise ConfigError("pareto_front needs at least one (metric, 'max'|'min') objective")
    for metric, direction in objectives:
        if direction not in ("max", "min"):
            raise ConfigError(f"objective {metric!r}: direction {direction!r} must be 'max' or 'min'")
    if missing not in ("exclude", "worst"):
        raise ConfigError(f"missing={missing!r} must be 'exclude' or 'worst'")

    # Scores to maximise; -inf stands for a missing value under missing="worst".
    scores: list[tuple[float, ...] | None] = []
    for row in rows:
        values = []
        for metric, direction in objectives:
            v = number(row.get(metric))
            if v is None:
                if missing == "exclude":
                    values = None
                    break
                values.append(-math.inf)
            else:
                values.append(v if direction == "max" else -v)
        if values is not None and all(v == -math.inf for v in values):
            values = None  # nothing to compare at all
        scores.append(tuple(values) if values is not None else None)

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    candidates = [i for i, s in enumerate(scores) if s is not None]
    return [
        i
        for i in candidates
        if not any(dominates(scores[j], scores[i]) for j in candidates if j != i)  # type: ignore[arg-type]
    ]
