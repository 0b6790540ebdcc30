"""The report's curves: strength sweeps with the points where metrics start to fall, robust accuracy
vs eps, the corruption heatmap; on small results tables whose answers are known."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from robustcompress.experiments.store import ResultsStore
from robustcompress.report import write_report
from robustcompress.report.curves import (
    corruption_grids,
    curve_plots,
    eps_curves,
    knee,
    strength,
    sweeps,
)
from robustcompress.report.results import ModelRow, Results

AT = {"type": "finetune", "epochs": 1, "objective": "pgd"}


def _png_size(png: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image.size


def _study(points: dict[str, tuple[dict, dict]]) -> Results:
    """name -> (last stage, final metrics); every recipe adversarially fine-tunes, then compresses."""
    rows, configs = [ModelRow("s/at", "baseline", "b", {"acc.clean": 0.91}, "baseline")], {}
    for name, (stage, metrics) in points.items():
        configs[f"s/{name}"] = {"name": f"s/{name}", "stages": [AT, stage]}
        rows += [ModelRow(f"s/{name}", "baseline", "b", {"acc.clean": 0.91}, "baseline"),
                 ModelRow(f"s/{name}", "final", f"a-{name}", metrics, name)]  # fmt: skip
    return Results(Path("."), rows, configs)


# clean accuracy holds until 90%, robust accuracy drops more than 1 point already at 50%
SPARSITY = {
    f"at-sparsity-{a}": ({"type": "prune", "method": "global", "amount": a},
                         {"acc.clean": c, "acc.pgd_linf_0.1": r, "mce": m})
    for a, c, r, m in [(0.3, 0.90, 0.50, 100.0), (0.5, 0.899, 0.485, 100.9), (0.7, 0.895, 0.30, 104.0),
                       (0.9, 0.70, 0.10, 140.0)]
}  # fmt: skip


def test_knee_is_the_first_strength_more_than_one_point_worse():
    pts = [(30, 90.0), (50, 89.1), (70, 88.9), (90, 70.0)]
    assert knee(pts, "max") == 70  # 89.1 is within 1 point of 90; 88.9 is not
    assert knee(pts, "min") is None  # nothing rises
    assert knee([(8, 100.0), (4, 101.0), (2, 101.5)], "min") == 2  # mCE: more than 1 point above
    assert knee([(0.3, 50.0)], "max") is None
    # exactly one point lower is not a fall, however the float subtraction rounds (paper 001's run)
    assert (
        knee([(0.3, 50.80000162124634), (0.5, 49.799999594688416), (0.7, 47.600001096725464)], "max") == 0.7
    )


def test_strength_is_read_from_the_recipe():
    assert strength([AT, {"type": "prune", "amount": 0.8}])[:2] == ("sparsity", 0.8)
    assert strength([{"type": "ptq", "bits": 4}])[:2] == ("bits", 4.0)
    assert strength([{"type": "qat"}])[:2] == ("bits", 8.0)  # the stage's default
    assert strength([{"type": "cluster", "clusters": 16, "epochs": 0}])[:2] == ("clusters", 16.0)
    assert strength([{"type": "cluster", "bits": 3}])[:2] == ("clusters", 8.0)
    assert strength([AT]) is None  # not compressed
    assert strength([{"type": "prune", "amount": 0.5}, {"type": "cluster", "clusters": 8}]) is None
    assert strength([{"type": "prune", "amount": 0.8}, {"type": "compact"}]) is None  # dense
    # recipes that differ only in the strength are one sweep
    assert (
        strength([AT, {"type": "prune", "amount": 0.3}])[2]
        == strength([AT, {"type": "prune", "amount": 0.9}])[2]
    )
    assert (
        strength([{"type": "prune", "amount": 0.3}])[2] != strength([AT, {"type": "prune", "amount": 0.3}])[2]
    )


def test_sparsity_sweep_marks_where_robustness_and_accuracy_fall():
    results = _study({**SPARSITY, "compress": ({"type": "prune", "amount": 0.8}, {"acc.clean": 0.5})})
    [sweep] = sweeps(results)  # "compress" differs in its recipe: a point of no sweep
    assert sweep.axis == "sparsity" and sweep.name == "at-sparsity-*"
    assert [x for x, _ in sweep.rows] == [0.3, 0.5, 0.7, 0.9]
    [plot] = [p for p in curve_plots(results) if p.name.startswith("strength_")]
    assert plot.title == "Accuracy, robust accuracy and mCE vs sparsity: at-sparsity-*"
    assert plot.metrics == ("acc.clean", "acc.pgd_linf_0.1", "mce")
    assert _png_size(plot.png) == (1408, 484)  # two panels (accuracies, mCE) of 6.4 x 4.4 in at 110 dpi
    assert "more than 1 point below its value at the weakest setting (sparsity 30%" in plot.caption
    assert "acc.clean at sparsity 90%; acc.pgd_linf_0.1 at sparsity 50%; mce at sparsity 70%" in plot.caption
    assert plot.caption.endswith("Robustness falls first.")


def test_bits_sweep_runs_from_many_bits_to_few():
    results = _study({
        f"at-bits-{b}": ({"type": "ptq", "bits": b}, {"acc.clean": c, "acc.worst_linf_0.1": r})
        for b, c, r in [(8, 0.9, 0.5), (4, 0.9, 0.5), (3, 0.85, 0.495), (2, 0.3, 0.1)]
    })  # fmt: skip
    [sweep] = sweeps(results)
    assert [x for x, _ in sweep.rows] == [8, 4, 3, 2]  # weakest first
    [plot] = curve_plots(results)
    assert plot.title == "Accuracy and robust accuracy vs bits: at-bits-*"
    assert "acc.clean at bits 3; acc.worst_linf_0.1 at bits 2" in plot.caption
    assert plot.caption.endswith("Clean accuracy falls first.")
    assert _png_size(plot.png) == (704, 484)  # one panel: no mCE


def test_no_sweep_no_strength_plot():
    results = _study({"at-sparsity-0.3": SPARSITY["at-sparsity-0.3"]})  # one strength is no curve
    assert sweeps(results) == [] and curve_plots(results) == []


def test_robust_accuracy_against_eps_prefers_the_worst_case():
    rows = [
        ModelRow("s", "final", "a", {"acc.pgd_linf_0.05": 0.6, "acc.pgd_linf_0.1": 0.4}, "m1"),
        ModelRow("t", "final", "b", {"acc.worst_linf_0.1": 0.2, "acc.worst_linf_0.05": 0.5}, "m2"),
    ]
    rows[0].metrics |= {"acc.worst_linf_0.05": 0.55, "acc.worst_linf_0.1": 0.35, "acc.pgd_l2_0.5": 0.3}
    assert eps_curves(rows) == {
        "linf": {
            "m1": [(0.05, 0.55, "acc.worst_linf_0.05"), (0.1, 0.35, "acc.worst_linf_0.1")],
            "m2": [(0.05, 0.5, "acc.worst_linf_0.05"), (0.1, 0.2, "acc.worst_linf_0.1")],
        }
    }  # the single L2 eps is no curve
    [plot] = curve_plots(Results(Path("."), rows, {}))
    assert plot.name == "robust_vs_eps" and plot.title == "Robust accuracy vs attack budget eps"
    assert _png_size(plot.png) == (704, 484)


def test_corruption_heatmap_per_model():
    metrics = {
        f"err.{c}.{s}": 0.1 * s + (0.2 if c == "fog" else 0)
        for c in ("fog", "gaussian_noise")
        for s in (1, 2, 3)
    }
    rows = [ModelRow("s", "baseline", "a", {**metrics, "mce": 100.0, "ce.fog": 100.0}, "baseline"),
            ModelRow("t", "final", "b", {"err.fog.1": 0.5}, "pruned")]  # fmt: skip
    grids = corruption_grids(rows)
    assert grids["baseline"][("fog", 3)] == pytest.approx(0.5) and grids["pruned"] == {("fog", 1): 0.5}
    assert len(grids["baseline"]) == 6  # ce.* and mce are no cells
    [plot] = curve_plots(Results(Path("."), rows, {}))
    assert plot.name == "corruption_heatmap" and "err.gaussian_noise.3" in plot.metrics
    width, height = _png_size(plot.png)
    assert width > height > 100


def test_curves_are_embedded_in_the_html_report(tmp_path):
    """A real results store (synthetic numbers): the sweep's figure and its caption are in the report."""
    store = ResultsStore(tmp_path / "results.sqlite")
    for name, (stage, metrics) in SPARSITY.items():
        config = {"name": f"s/{name}", "data": {"dataset": "fashion-mnist"}, "stages": [AT, stage]}
        store.add_experiment(f"s/{name}", config)
        store.add_metrics(f"s/{name}", "baseline", "base", "clean", {"acc.clean": 0.91})
        store.add_metrics(f"s/{name}", "final", f"a-{name}", "clean", metrics)
    html = write_report(tmp_path, tmp_path / "r.html").read_text()
    figure = re.search(
        r'<figure><img alt="Accuracy, robust accuracy and mCE vs sparsity[^"]*" src="(.*?)">(.*?)</figure>',
        html,
    )
    assert figure is not None
    png = base64.b64decode(figure.group(1).removeprefix("data:image/png;base64,"))
    assert _png_size(png) == (1408, 484)
    assert "Robustness falls first." in figure.group(2)


def test_real_tiny_study_draws_its_sparsity_curve_and_lists_its_compact_model(tmp_path, data_root):
    """A real run (cnn8 x0.25, 300 images, one epoch): a three-point pruning sweep and a compact model
    of the 80%-pruned model's size; the report draws the sweep and names the width the stage chose."""
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.runner import run_experiments
    from robustcompress.report.html import compact_models
    from robustcompress.report.results import load_results
    from tests.tiny_study import tiny_config

    sweep = "".join(
        f'[[recipes]]\nname = "prune-{a}"\nstages = [{{type = "prune", method = "global", amount = {a}}}]\n'
        for a in (0.3, 0.6, 0.9)
    )
    extra = f"""
[[evaluations]]
type = "clean"
[[evaluations]]
type = "efficiency"
latency = false
layer_table = false
{sweep}
[[recipes]]
name = "compact"
stages = [{{type = "prune", method = "global", amount = 0.8}}, {{type = "compact", epochs = 1}}]
"""
    path = tiny_config(tmp_path, data_root, extra, name="tiny", limit_train=300, limit_test=100)
    run_experiments(load_config(path), progress=False, log=lambda m: None)
    results = load_results(tmp_path / "out")
    [sweep_found] = sweeps(results)
    assert [x for x, _ in sweep_found.rows] == [0.3, 0.6, 0.9] and sweep_found.name == "prune-*"
    [compact] = compact_models(results)
    params = next(r for r in results.rows if r.experiment == "tiny/compact" and r.model == "final").metrics
    assert compact["label"] == "compact" and 0.01 < compact["width"] < 0.25  # a fifth of a x0.25 cnn8
    assert compact["match"] == "params" and params["params"] == compact["measured"]
    assert abs(compact["measured"] - compact["target"]) / compact["target"] < 0.05
    html = write_report(tmp_path / "out").read_text()
    assert "Accuracy vs sparsity: prune-*" in html and "Compact models of the same size" in html
    assert f"<td>{compact['width']:g}</td>" in html


def test_only_the_flagged_points_of_a_curve_are_hollow():
    from matplotlib.figure import Figure

    from robustcompress.report.plots import marked_line
    from robustcompress.report.provenance import DAGGER

    ax = Figure().subplots()
    line = marked_line(ax, [0.3, 0.5, 0.7], [50.0, 48.5, 30.0], [False, True, False], "C0", "acc.pgd")
    assert line.get_label() == "acc.pgd" + DAGGER and line.get_markevery() == [0, 2]
    hollow = ax.lines[1]
    assert list(hollow.get_xdata()) == [0.5] and list(hollow.get_ydata()) == [48.5]
    assert hollow.get_markerfacecolor() == "white" and hollow.get_linestyle() == "None"
    trusted = marked_line(ax, [1.0, 2.0], [10.0, 20.0], [False, False], "C1", "clean")
    assert trusted.get_label() == "clean" and trusted.get_markevery() == [0, 1] and len(ax.lines) == 3
