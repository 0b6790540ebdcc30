"""Curves over a study, drawn only when its results hold the data (otherwise left out, not skipped):

- accuracy, robust accuracy and mCE against compression strength: sparsity (prune `amount`), bits
  (ptq / qat `bits`) or clusters (cluster `clusters`), read from each experiment's stored recipe,
  with the strength at which each metric starts to fall marked (paper 001: robustness falls first);
- robust accuracy against eps, a curve per model (an adversarial evaluation with several eps);
- top-1 error per corruption and severity as a heatmap per model (the corruption evaluation's
  `err.<corruption>.<severity>`).
Certified accuracy against radius is plots.certified_vs_radius.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from robustcompress.report.metrics import better, metric_kind
from robustcompress.report.pareto import number
from robustcompress.report.plots import Plot, marked_line, robust_metrics
from robustcompress.report.provenance import flagged_metrics
from robustcompress.report.results import ModelRow, Results
from robustcompress.stages import STAGES

# stage type -> (option, axis); the axis's weakest setting is its smallest sparsity, most bits, most
# clusters. A recipe with a `compact` stage ends in a dense model: its prune only sets a size.
STRENGTH = {"prune": ("amount", "sparsity"), "ptq": ("bits", "bits"), "qat": ("bits", "bits"),
            "cluster": ("clusters", "clusters")}  # fmt: skip
NOT_COMPRESSED = {"compact"}
AXIS_LABEL = {
    "sparsity": "sparsity (% of weights pruned)",
    "bits": "bits per weight (fewer: stronger)",
    "clusters": "clusters per weight tensor (fewer: stronger)",
}
FALL = 1.0  # points: a metric "falls" once it is more than this below its weakest-setting value
MAX_CURVES = 12
MAX_HEATMAPS = 6
ROBUST_EPS = re.compile(r"acc\.(.+)_(linf|l2|l1)_([0-9.eE+-]+)")
CORRUPTION_ERR = re.compile(r"err\.([^.]+)\.(\d+)")


def curve_plots(results: Results) -> list[Plot]:
    """Every curve the results have the data for (see the module docstring)."""
    rows = results.comparison_rows()
    return [*strength_plots(results), *([eps_plot(rows)] if eps_curves(rows) else []),
            *([corruption_heatmap(rows)] if corruption_grids(rows) else [])]  # fmt: skip


# --- strength -------------------------------------------------------------------------------------


@dataclass
class Sweep:
    axis: str  # sparsity | bits | clusters
    rows: list[tuple[float, ModelRow]]  # (strength, final model), weakest first
    name: str  # what the experiments share, e.g. "at-sparsity-*"


def strength(stages: Sequence[dict]) -> tuple[str, float, str] | None:
    """(axis, strength, recipe with the strength left out) of a recipe with exactly one
    strength-setting compression stage; None for anything else (no compression, a combination)."""
    if any(s.get("type") in NOT_COMPRESSED for s in stages):
        return None
    found = [i for i, s in enumerate(stages) if s.get("type") in STRENGTH]
    if len(found) != 1:
        return None
    stage = stages[found[0]]
    option, axis = STRENGTH[stage["type"]]
    value = stage.get(option)
    if value is None and stage["type"] == "cluster" and stage.get("bits") is not None:
        value = 2 ** stage["bits"]
    if value is None:
        default = STAGES.get(stage["type"]).config_cls.model_fields[option].default
        value = default
    if number(value) is None:
        return None
    rest = [s if i != found[0] else {k: v for k, v in s.items() if k not in (option, "bits")}
            for i, s in enumerate(stages)]  # fmt: skip
    return axis, float(value), json.dumps(rest, sort_keys=True, default=str)


def sweeps(results: Results) -> list[Sweep]:
    """Experiments whose recipes differ only in one compression stage's strength, 2+ strengths each."""
    groups: dict[tuple[str, str], dict[float, ModelRow]] = {}
    for row in results.rows:
        config = results.configs.get(row.experiment) or {}
        found = strength(config.get("stages") or []) if row.model == "final" else None
        if found is not None:
            axis, value, rest = found
            groups.setdefault((axis, rest), {})[value] = row
    out = []
    for (axis, _), by_value in groups.items():
        if len(by_value) < 2:
            continue
        order = sorted(by_value, reverse=axis != "sparsity")  # weakest first
        labels = [by_value[v].label for v in order]
        out.append(Sweep(axis, [(v, by_value[v]) for v in order], _shared_name(labels)))
    return out


def knee(points: Sequence[tuple[float, float]], direction: str, fall: float = FALL) -> float | None:
    """The first strength (points weakest first, values in points: % or mCE) at which the metric is
    more than `fall` worse than at the weakest setting; None if it never is."""
    if not points:
        return None
    ref = points[0][1]
    for x, v in points[1:]:
        drop = round(
            ref - v if direction == "max" else v - ref, 4
        )  # float32 accuracies: 50.80000162 - 49.79999959 is 1 point
        if drop > fall:
            return x
    return None


def strength_plots(results: Results) -> list[Plot]:
    return [_strength_plot(s, i) for i, s in enumerate(sweeps(results))]


def _strength_plot(sweep: Sweep, index: int) -> Plot:
    rows = [r for _, r in sweep.rows]
    robust = robust_metrics(rows)[:1]
    accuracies = [
        m for m in ["acc.clean", *robust] if any(number(r.metrics.get(m)) is not None for r in rows)
    ]
    mce = ["mce"] if any(number(r.metrics.get("mce")) is not None for r in rows) else []
    names = ["accuracy", *(["robust accuracy"] if robust else []), *(["mCE"] if mce else [])]
    shown = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    title = f"{shown[0].upper()}{shown[1:]} vs {sweep.axis}"
    plot = Plot(f"strength_{sweep.axis}_{index}", f"{title}: {sweep.name}", metrics=(*accuracies, *mce))
    panels = [p for p in (accuracies, mce) if p]
    if not panels:
        plot.skipped = "skipped: the sweep's models have neither accuracy nor mCE"
        return plot
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    knees: dict[str, float | None] = {}
    colour = {m: f"C{i}" for i, m in enumerate(plot.metrics)}
    for ax, metrics in zip(axes, panels):
        ax.grid(True, alpha=0.3)
        for m in metrics:
            measured = [(x, r) for x, r in sweep.rows if _value(m, r) is not None]
            pts = [(_x(sweep.axis, x), _value(m, r)) for x, r in measured]
            flagged = [m in flagged_metrics(r) for _, r in measured]
            marked_line(ax, [p[0] for p in pts], [p[1] for p in pts], flagged, colour[m], m)
            k = knees[m] = knee(pts, better(m) or "max")
            if k is not None:
                ax.axvline(
                    k, ls="--", lw=1.2, color=colour[m], label=f"{m} starts to fall ({_fmt(sweep.axis, k)})"
                )
        if sweep.axis == "clusters":
            ax.set_xscale("log", base=2)
        if sweep.axis != "sparsity":
            ax.invert_xaxis()  # stronger to the right
        ax.set_xlabel(AXIS_LABEL[sweep.axis])
        ax.set_ylabel("accuracy (%)" if metrics is accuracies else "mCE (100 = the baseline)")
        ax.legend(fontsize=8)
    fig.suptitle(plot.title)
    fig.tight_layout()
    plot.png = _png(fig)
    plot.caption = _knee_caption(sweep, knees, accuracies)
    return plot


def _knee_caption(sweep: Sweep, knees: dict[str, float | None], accuracies: Sequence[str]) -> str:
    weakest = _fmt(sweep.axis, _x(sweep.axis, sweep.rows[0][0]))
    said = [f"{m} at {sweep.axis} {_fmt(sweep.axis, k)}" if k is not None else f"{m} does not fall"
            for m, k in knees.items()]  # fmt: skip
    text = (
        f"A metric starts to fall (dashed line) at the first {sweep.axis} at which it is more than "
        f"{FALL:g} point below its value at the weakest setting ({sweep.axis} {weakest}; mCE: more than "
        f"{FALL:g} point above). Here: {'; '.join(said)}."
    )
    if len(accuracies) == 2:
        clean, robust = (knees.get(m) for m in accuracies)
        order = _order(sweep.axis, robust, clean)
        if order:
            text += f" {order}"
    return text


def _order(axis: str, robust: float | None, clean: float | None) -> str:
    """Which falls first, in words (paper 001: robustness falls first)."""
    if robust is None and clean is None:
        return ""
    rank = (lambda x: x) if axis == "sparsity" else (lambda x: -x)  # noqa: E731
    if clean is None or (robust is not None and rank(robust) < rank(clean)):
        return "Robustness falls first."
    if robust is None or rank(clean) < rank(robust):
        return "Clean accuracy falls first."
    return "Both fall at the same strength."


# --- robust accuracy vs eps -----------------------------------------------------------------------


def eps_curves(rows: Sequence[ModelRow]) -> dict[str, dict[str, list[tuple[float, float, str]]]]:
    """norm -> model label -> [(eps, robust accuracy, metric)] for the norm's chosen attack (the
    worst case where measured), for models measured at two or more eps."""
    by: dict[tuple[str, str], dict[str, list[tuple[float, float, str]]]] = {}
    for r in rows:
        for name, value in r.metrics.items():
            m, v = ROBUST_EPS.fullmatch(name), number(value)
            if m is None or v is None:
                continue
            try:
                eps = float(m.group(3))
            except ValueError:
                continue
            by.setdefault((m.group(2), m.group(1)), {}).setdefault(r.label, []).append((eps, v, name))
    out: dict[str, dict[str, list[tuple[float, float, str]]]] = {}
    for norm in sorted({n for n, _ in by}):
        attacks = {a: c for (n, a), c in by.items() if n == norm}
        curves = {label: sorted(p) for label, p in attacks.get("worst", {}).items() if len(p) >= 2}
        if not curves:
            best = max(attacks, key=lambda a: sum(len(p) >= 2 for p in attacks[a].values()))
            curves = {label: sorted(p) for label, p in attacks[best].items() if len(p) >= 2}
        if curves:
            out[norm] = curves
    return out


def eps_plot(rows: Sequence[ModelRow]) -> Plot:
    curves = eps_curves(rows)
    plot = Plot("robust_vs_eps", "Robust accuracy vs attack budget eps")
    plot.metrics = tuple(dict.fromkeys(m for c in curves.values() for p in c.values() for _, _, m in p))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.4, 5.2 * len(curves)), 4.4))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    shown = 0
    for ax, (norm, by_model) in zip(axes, curves.items()):
        ax.grid(True, alpha=0.3)
        flagged = {r.label: flagged_metrics(r) for r in rows}
        for i, (label, pts) in enumerate(list(by_model.items())[:MAX_CURVES]):
            hollow = [m in flagged.get(label, ()) for _, _, m in pts]
            marked_line(ax, [p[0] for p in pts], [100 * p[1] for p in pts], hollow, f"C{i % 10}", label)
        shown = max(shown, min(len(by_model), MAX_CURVES))
        attack = ROBUST_EPS.fullmatch(next(iter(by_model.values()))[0][2]).group(1)
        ax.set_title(f"{norm}, {'worst case over the attacks' if attack == 'worst' else attack}", fontsize=10)
        ax.set_xlabel(f"eps ({norm} radius in pixel space, inputs in [0, 1])")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=8)
    total = max(len(c) for c in curves.values())
    if total > shown:
        plot.caption = f"The first {shown} of {total} models measured at several eps."
    fig.suptitle(plot.title)
    fig.tight_layout()
    plot.png = _png(fig)
    return plot


# --- corruption heatmap ---------------------------------------------------------------------------


def corruption_grids(rows: Sequence[ModelRow]) -> dict[str, dict[tuple[str, int], float]]:
    """model label -> {(corruption, severity): top-1 error} from `err.<corruption>.<severity>`."""
    out: dict[str, dict[tuple[str, int], float]] = {}
    for r in rows:
        for name, value in r.metrics.items():
            m, v = CORRUPTION_ERR.fullmatch(name), number(value)
            if m is not None and v is not None:
                out.setdefault(r.label, {})[(m.group(1), int(m.group(2)))] = v
    return out


def corruption_heatmap(rows: Sequence[ModelRow]) -> Plot:
    grids = corruption_grids(rows)
    plot = Plot("corruption_heatmap", "Top-1 error per corruption and severity")
    plot.metrics = tuple(sorted({f"err.{c}.{s}" for g in grids.values() for c, s in g}))
    shown = list(grids.items())[:MAX_HEATMAPS]
    corruptions = sorted({c for _, g in shown for c, _ in g})
    severities = sorted({s for _, g in shown for _, s in g})
    values = [100 * v for _, g in shown for v in g.values()]
    lo, hi = min(values), max(values)
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    from matplotlib.figure import Figure

    height = 0.25 * len(corruptions) + 1.4
    fig = Figure(figsize=(cols * (2.4 + 0.5 * len(severities)) + 1.5, height * nrows + 0.8))
    axes = fig.subplots(nrows, cols, squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= len(shown):
            ax.axis("off")
            continue
        label, grid = shown[k]
        data = [[100 * grid[(c, s)] if (c, s) in grid else math.nan for s in severities] for c in corruptions]
        image = ax.imshow(data, cmap="Reds", vmin=lo, vmax=hi, aspect="auto")
        if len(corruptions) * len(severities) <= 120:
            for i, row in enumerate(data):
                for j, v in enumerate(row):
                    if not math.isnan(v):
                        dark = v > lo + 0.6 * (hi - lo)
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if dark else "black")  # fmt: skip
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_yticks(range(len(corruptions)), corruptions if k % cols == 0 else [], fontsize=7)
        ax.set_xlabel("severity")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="top-1 error (%)", shrink=0.8)
    if len(grids) > len(shown):
        plot.caption = f"The first {len(shown)} of {len(grids)} models with per-severity errors."
    fig.suptitle(plot.title)
    plot.png = _png(fig, tight=False)
    return plot


# --- helpers --------------------------------------------------------------------------------------


def _value(metric: str, row: ModelRow) -> float | None:
    v = number(row.metrics.get(metric))
    if v is None:
        return None
    return 100 * v if metric_kind(metric) == "fraction" else v


def _x(axis: str, value: float) -> float:
    return 100 * value if axis == "sparsity" else value


def _fmt(axis: str, x: float) -> str:
    return f"{x:g}%" if axis == "sparsity" else f"{x:g}"


def _shared_name(labels: Sequence[str]) -> str:
    """'at-sparsity-*' from at-sparsity-0.3, at-sparsity-0.5 ...; else the labels themselves."""
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("0123456789.")
    return f"{prefix}*" if len(prefix) >= 3 else ", ".join(labels)


def _png(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", dpi=110, metadata={"Software": None}, bbox_inches=None if tight else "tight"
    )
    return buf.getvalue()
