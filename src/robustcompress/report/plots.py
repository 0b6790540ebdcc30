"""The report's plots (matplotlib, rendered off-screen to PNG bytes).

- clean accuracy vs compression ratio, Pareto front highlighted (paper 000),
- robust accuracy vs clean accuracy (paper 001: robustness falls before accuracy),
- mCE vs compression ratio, Pareto front highlighted (paper 000),
- certified accuracy vs L2 radius, one curve per model, one panel per sigma (randomized smoothing;
  drawn only when some model was certified).
The curves over compression strength, eps and corruption severity are in curves.py.
A plot whose metrics no model has is skipped with the reason, never drawn empty. A point whose
figure carries a gradient-masking flag is drawn hollow and kept off the front (unless
include_flagged): its robust accuracy is likely overestimated.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from robustcompress.report.metrics import better, metric_kind
from robustcompress.report.pareto import number, pareto_front
from robustcompress.report.provenance import DAGGER, flagged_metrics
from robustcompress.report.results import ModelRow

ROBUST = "robust acc.*"
# Which evaluation produces a metric, for the hint of a skipped plot.
PRODUCED_BY = {"acc.clean": "clean", "size.ratio": "size", "mce": "corruption", ROBUST: "adversarial"}
MAX_ROBUST_SERIES = 4
# cert.smooth.s<sigma>.r<radius> (names from evaluation/certified.py; numbers written with :g).
CERTIFIED = re.compile(r"cert\.smooth\.s([0-9.eE+-]+)\.r([0-9.eE+-]+)")


@dataclass
class Plot:
    name: str  # file-name-like id, e.g. "accuracy_vs_ratio"
    title: str
    png: bytes | None = None
    skipped: str | None = None  # why it was not drawn
    metrics: tuple[str, ...] = ()  # what it shows (the report says what they were measured on)
    caption: str = ""  # what a reader needs to read it (a definition, what it shows)


def make_plots(rows: Sequence[ModelRow], include_flagged: bool = False) -> list[Plot]:
    """Every report plot over `rows` (drawn, or skipped with a reason)."""
    return [
        accuracy_vs_ratio(rows, include_flagged),
        robust_vs_clean(rows),
        mce_vs_ratio(rows, include_flagged),
    ] + ([certified_vs_radius(rows)] if certified_curves(rows) else [])


def accuracy_vs_ratio(rows: Sequence[ModelRow], include_flagged: bool = False) -> Plot:
    return _scatter_with_front(
        rows, "size.ratio", "acc.clean", "accuracy_vs_ratio", "Clean accuracy vs compression ratio",
        include_flagged=include_flagged,
    )  # fmt: skip


def mce_vs_ratio(rows: Sequence[ModelRow], include_flagged: bool = False) -> Plot:
    return _scatter_with_front(
        rows, "size.ratio", "mce", "mce_vs_ratio", "mCE vs compression ratio", reference_y=100.0,
        include_flagged=include_flagged,
    )  # fmt: skip


def robust_vs_clean(rows: Sequence[ModelRow]) -> Plot:
    plot = Plot("robust_vs_clean", "Robust accuracy vs clean accuracy")
    series = robust_metrics(rows)
    if not series:
        plot.skipped = _missing("acc.clean", ROBUST, rows)
        return plot
    plot.metrics = ("acc.clean", *series)
    fig, ax = _figure()
    markers = "osD^"
    any_flagged = False
    for metric, marker in zip(series, markers):
        pts = _points(rows, "acc.clean", metric)
        flags = [metric in flagged_metrics(r) for r in rows if _has(r, "acc.clean", metric)]
        any_flagged |= any(flags)
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=metric, zorder=3)
        colour = sc.get_facecolor()[0]
        sc.set_facecolors([(1, 1, 1, 1) if f else colour for f in flags])
        sc.set_edgecolors([colour] * len(pts))
        for (x, y, label), f in zip(pts, flags):
            _annotate(ax, x, y, label + (DAGGER if f else ""))
    if any_flagged:
        ax.scatter(
            [], [], marker="o", facecolors="white", edgecolors="grey", label=f"hollow{DAGGER}: flagged"
        )
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="robust = clean")
    ax.set_xlabel(_axis_label("acc.clean"))
    ax.set_ylabel("robust accuracy (%)")
    ax.legend(fontsize=8)
    plot.png = _png(fig, ax, plot.title)
    return plot


def marked_line(
    ax, xs: Sequence[float], ys: Sequence[float], flagged: Sequence[bool], colour: str, label: str
):
    """A curve with a marker per point: filled where the figure is trusted, hollow where it carries a
    gradient-masking flag (only those points, so one flagged model does not cast doubt on its neighbours);
    the legend entry gets the dagger when any point is flagged."""
    hollow = [i for i, f in enumerate(flagged) if f]
    trusted = [i for i, f in enumerate(flagged) if not f]
    line = ax.plot(xs, ys, marker="o", color=colour, markevery=trusted,
                   label=label + (DAGGER if hollow else ""))[0]  # fmt: skip
    if hollow:
        ax.plot([xs[i] for i in hollow], [ys[i] for i in hollow], ls="none", marker="o", color=colour,
                markerfacecolor="white", zorder=line.get_zorder() + 0.1)  # fmt: skip
    return line


def certified_vs_radius(rows: Sequence[ModelRow]) -> Plot:
    """Certified accuracy against L2 radius: a panel per sigma, a curve per model, and each sigma's
    radius cap (past it no radius can be certified with the sample count n, whatever the model).
    A point measured under a flag is hollow and its curve marked (there is no front to keep it off)."""
    plot = Plot("certified_vs_radius", "Certified accuracy vs L2 radius (randomized smoothing)")
    curves = certified_curves(rows)
    if not curves:
        plot.skipped = "skipped: no model has cert.smooth.s<sigma>.r<radius> (add the certified evaluation)"
        return plot
    sigmas = sorted({sigma for sigma, _ in curves}, key=float)
    plot.metrics = tuple(dict.fromkeys(m for c in curves.values() for _, _, m in c))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.4, 4.0 * len(sigmas)), 4.4))
    axes = fig.subplots(1, len(sigmas), sharey=True, squeeze=False)[0]
    colours = {r.label: f"C{i % 10}" for i, r in enumerate(rows)}
    for ax, sigma in zip(axes, sigmas):
        ax.grid(True, alpha=0.3)
        for r in rows:
            points = curves.get((sigma, r.label))
            if not points:
                continue
            flags = flagged_metrics(r)
            marked_line(
                ax, [p[0] for p in points], [100 * p[1] for p in points],
                [m in flags for _, _, m in points], colours[r.label], r.label,
            )  # fmt: skip
        for cap, n in _radius_caps(rows, sigma):
            ax.axvline(cap, ls="--", color="grey", lw=1, label=f"radius cap (n = {n})" if n else "radius cap")
        ax.set_title(f"\u03c3 = {sigma}", fontsize=10)
        ax.set_xlabel("L2 radius (pixel space, inputs in [0, 1])")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("certified accuracy (%)")
    fig.suptitle(plot.title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plot.png = buf.getvalue()
    return plot


def certified_curves(rows: Sequence[ModelRow]) -> dict[tuple[str, str], list[tuple[float, float, str]]]:
    """(sigma, model label) -> [(radius, certified accuracy, metric)] sorted by radius."""
    out: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for r in rows:
        for name, value in r.metrics.items():
            m = CERTIFIED.fullmatch(name)
            v = number(value)
            if m is None or v is None:
                continue
            try:
                radius = float(m.group(2))
                float(m.group(1))
            except ValueError:
                continue
            out.setdefault((m.group(1), r.label), []).append((radius, v, name))
    return {k: sorted(v) for k, v in out.items()}


def _radius_caps(rows: Sequence[ModelRow], sigma: str) -> list[tuple[float, str]]:
    """Each distinct radius cap of `sigma` over the certified rows, with the n it follows from."""
    caps: dict[float, str] = {}
    for r in rows:
        cap = number(r.metrics.get(f"cert.smooth.s{sigma}.radius_cap"))
        if cap is not None and math.isfinite(cap):
            n = number(r.metrics.get("cert.smooth.n"))
            caps.setdefault(round(cap, 6), "" if n is None else f"{int(n):,}" if n.is_integer() else f"{n:g}")
    return sorted(caps.items())


def robust_metrics(rows: Sequence[ModelRow]) -> list[str]:
    """Robust-accuracy metrics that some model has together with acc.clean: worst-case first."""
    names = {
        k
        for r in rows
        if number(r.metrics.get("acc.clean")) is not None
        for k, v in r.metrics.items()
        if k.startswith("acc.") and k not in ("acc.clean", "acc.val") and number(v) is not None
    }
    order = sorted(names, key=lambda n: (0 if "worst" in n else 1 if "pgd" in n else 2, n))
    return order[:MAX_ROBUST_SERIES]


def _scatter_with_front(
    rows: Sequence[ModelRow],
    x: str,
    y: str,
    name: str,
    title: str,
    reference_y: float | None = None,
    include_flagged: bool = False,
) -> Plot:
    plot = Plot(name, title, metrics=(x, y))
    pts = _points(rows, x, y)
    if not pts:
        plot.skipped = _missing(x, y, rows)
        return plot
    fig, ax = _figure()
    flagged = [bool({x, y} & flagged_metrics(r)) for r in rows if _has(r, x, y)]
    objectives = [(x, better(x) or "max"), (y, better(y) or "max")]
    ranked = [{x: p[0], y: p[1]} if include_flagged or not f else {} for p, f in zip(pts, flagged)]
    front = set(pareto_front(ranked, objectives))
    rest = [p for i, p in enumerate(pts) if i not in front and not flagged[i]]
    hollow = [p for i, p in enumerate(pts) if i not in front and flagged[i]]
    on = sorted((p for i, p in enumerate(pts) if i in front), key=lambda p: (p[0], p[1]))
    ax.scatter([p[0] for p in rest], [p[1] for p in rest], color="tab:blue", label="models", zorder=3)
    if hollow:
        ax.scatter(
            [p[0] for p in hollow], [p[1] for p in hollow], facecolors="white", edgecolors="tab:blue",
            label=f"flagged{DAGGER} (off the front)", zorder=3,
        )  # fmt: skip
    ax.scatter([p[0] for p in on], [p[1] for p in on], color="tab:red", s=60, label="Pareto front", zorder=4)
    ax.step([p[0] for p in on], [p[1] for p in on], where="pre", color="tab:red", lw=1, alpha=0.6)
    for (px, py, label), f in zip(pts, flagged):
        _annotate(ax, px, py, label + (DAGGER if f else ""))
    if reference_y is not None:
        ax.axhline(reference_y, ls=":", color="grey", lw=1, label=f"baseline level ({reference_y:g})")
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_axis_label(y))
    ax.legend(fontsize=8)
    plot.png = _png(fig, ax, title)
    return plot


def _has(row: ModelRow, x: str, y: str) -> bool:
    return number(row.metrics.get(x)) is not None and number(row.metrics.get(y)) is not None


def _points(rows: Sequence[ModelRow], x: str, y: str) -> list[tuple[float, float, str]]:
    """(x, y, label) of every row having both metrics; fractions in %."""
    out = []
    for r in rows:
        vx, vy = number(r.metrics.get(x)), number(r.metrics.get(y))
        if vx is not None and vy is not None:
            out.append((_scale(x, vx), _scale(y, vy), r.label))
    return out


def _scale(metric: str, v: float) -> float:
    return 100 * v if metric_kind(metric) == "fraction" else v


def _axis_label(metric: str) -> str:
    units = {"fraction": "%", "score": "100 = baseline", "ratio": "x", "ms": "ms", "bytes": "bytes"}
    unit = units.get(metric_kind(metric))
    return f"{metric} ({unit})" if unit else metric


def _missing(x: str, y: str, rows: Sequence[ModelRow]) -> str:
    have = lambda m: any(number(r.metrics.get(m)) is not None for r in rows)  # noqa: E731
    absent = [m for m in (x, y) if "*" in m or not have(m)] or [f"{x} and {y} on the same model"]
    hints = sorted({PRODUCED_BY.get(m, "") for m in absent} - {""})
    add = f" (add the {' and '.join(hints)} evaluation{'s' if len(hints) > 1 else ''})" if hints else ""
    return f"skipped: no model has {', '.join(absent)}{add}"


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _annotate(ax, x: float, y: float, label: str) -> None:
    ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, alpha=0.8)


def _png(fig, ax, title: str) -> bytes:
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()
