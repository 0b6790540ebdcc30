"""Analysis: boundary distances where the answer is known, figures as real PNGs, t-SNE, the CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from robustcompress.analysis import (
    AnalysisConfig,
    analyze,
    boundary_distances,
    default_layers,
    distance_along,
    has_input_gradients,
    tsne_analysis,
)
from robustcompress.analysis.figures import save_png
from robustcompress.data.types import ImageData

D = 64  # a 1x8x8 "image"


class Linear2(nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (class 1 where positive)."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.lin = nn.Linear(w.numel(), 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.stack([-w / 2, w / 2]))
            self.lin.bias.copy_(torch.tensor([-b / 2, b / 2]))

    def forward(self, x):
        return self.lin(x.flatten(1))


class IgnoresInput(nn.Module):
    """Always the same logits: the input is multiplied by zero (gradients exist and are zero)."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, 1.0, -0.5]))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1).sum(1, keepdim=True)


class Constant(nn.Module):
    """Always the same logits, not even connected to the input: no input gradients at all."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, 1.0, -0.5]))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


@pytest.fixture()
def linear():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(D, generator=gen)
    x = 0.4 + 0.2 * torch.rand(8, 1, 8, 8, generator=gen)  # inside the box: clipping never binds early
    b = float(-0.5 * w.sum()) + 0.1  # the hyperplane passes near the images: margins of a few 0.01
    return Linear2(w, b), w, b, x


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_linear_model_distance_along_its_weight_is_the_margin(linear, norm):
    model, w, b, x = linear
    result = boundary_distances(model, x, norm=norm, direction="gradient", n_random=6, bisect=20)
    dual = w.norm() if norm == "l2" else w.abs().sum()  # distance along the steepest direction
    expected = (x.flatten(1) @ w + b).abs() / dual
    tol = result.max_dist / 32 / 2**20 + 1e-5
    assert result.found_adv.all()
    torch.testing.assert_close(result.dist_adv, expected, atol=tol, rtol=0)
    # along random directions the boundary is farther (Cauchy-Schwarz), however they end
    assert (result.dist_random > result.dist_adv[:, None]).all()
    m = result.metrics()
    assert m["analysis.boundary.adv_over_random"] < 1
    assert m["analysis.boundary.has_gradients"] == 1
    # a flat boundary: no curvature
    assert abs(m["analysis.boundary.curvature"]) < 1e-3


def test_distance_along_a_given_direction_is_margin_over_cosine(linear):
    model, w, b, x = linear
    gen = torch.Generator().manual_seed(1)
    score = x.flatten(1) @ w + b
    r = torch.randn(len(x), D, generator=gen)
    v = -score.sign()[:, None] * w / w.norm() + 0.7 * r / r.norm(dim=1, keepdim=True)  # towards the boundary
    v = (v / v.norm(dim=1, keepdim=True)).view_as(x)
    labels = (score > 0).long()
    expected = score.abs() / (v.flatten(1) @ w).abs()
    dist, found = distance_along(model, x, v, labels, "l2", max_dist=100.0, scan=64, bisect=24)
    inside = expected < 0.39  # clipping to [0, 1] cannot bind before 0.4 / max|v_i| >= 0.4
    assert inside.any()
    torch.testing.assert_close(dist[inside], expected[inside], atol=1e-4, rtol=0)
    assert found[inside].all()


@pytest.mark.parametrize("model_cls", [IgnoresInput, Constant])
def test_model_ignoring_its_input_has_no_boundary(model_cls):
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model = model_cls()
    result = boundary_distances(model, x, norm="l2", n_random=3, direction="pgd", scan=8, bisect=4)
    m = result.metrics()
    assert m["analysis.boundary.censored_random"] == 1.0
    assert not result.found_random.any()
    assert "analysis.boundary.adv_over_random" not in m  # no boundary: no ratio
    if model_cls is Constant:
        assert not has_input_gradients(model, x)
        assert m["analysis.boundary.has_gradients"] == 0 and "analysis.boundary.dist_adv" not in m
    else:
        assert m["analysis.boundary.censored_adv"] == 1.0
        assert m["analysis.boundary.dist_adv"] == pytest.approx(math.sqrt(D))


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_save_png_is_atomic_and_sized(tmp_path):
    from robustcompress.analysis.figures import new_figure

    fig, _ = new_figure(1, 2, panel=3.0)
    path = save_png(fig, tmp_path / "f.png", dpi=50)
    assert _png_size(path) == (int((3.0 * 2 + 1.5) * 50), int((3.0 + 0.8) * 50))
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temporary left behind


def test_analyze_draws_boundary_figures_for_a_pair(linear, tmp_path):
    model, w, b, _ = linear
    gen = torch.Generator().manual_seed(0)
    # images spread mostly along w: the first principal component is w, the boundary a line across it
    s = torch.rand(40, 1, generator=gen) * 2 - 1
    x = (
        (0.5 + 0.3 * s * w / w.norm() + 0.01 * torch.randn(40, D, generator=gen))
        .clamp(0, 1)
        .view(40, 1, 8, 8)
    )
    data = ImageData(x, (x.flatten(1) @ w + b > 0).long())
    other = Linear2(-w, -b)  # the same boundary, classes swapped
    cfg = AnalysisConfig(n_images=6, n_random=2, n_sections=2, scan=8, bisect=4, steps=3,
                         section_resolution=9, pca_resolution=12)  # fmt: skip
    result = analyze({"parent": model, "flipped": other}, data, cfg, tmp_path, class_names=["neg", "pos"])
    assert set(result.figures) == {"boundary_pca", "boundary_sections"}
    assert _png_size(result.figures["boundary_pca"]) == (int((4.0 * 2 + 1.5) * 100), int((4.0 + 0.8) * 100))
    assert _png_size(result.figures["boundary_sections"]) == (
        int((3.2 * 2 + 1.5) * 100),
        int((3.2 * 2 + 0.8) * 100),
    )
    for metrics in result.metrics.values():
        # a straight boundary perpendicular to the first axis: one change in each row of 12 cells
        assert metrics["analysis.boundary.pca_changes"] == pytest.approx(1 / 22)
        assert metrics["analysis.boundary.n_images"] == 6


def test_tsne_on_trained_cnn8_gives_per_layer_numbers(trained_cnn8, tmp_path):
    model, splits = trained_cnn8
    layers = default_layers(model)
    assert layers == ["input", "net.features.7", "net.classifier.1", "net.classifier.4"]  # paper 003's
    fig, numbers, notes = tsne_analysis(
        {"cnn8": model, "copy": copy.deepcopy(model)}, splits.test, 8, n_images=12, n_reference=3,
        eps=0.1, steps=3, max_iter=250,
    )  # fmt: skip
    path = save_png(fig, tmp_path / "tsne.png")
    assert _png_size(path) == (int((3.2 * 4 + 1.5) * 100), int((3.2 * 2 + 0.8) * 100))
    assert not notes
    m = numbers["cnn8"]
    assert m["n_images"] == 12 and m["class"] == 8
    for layer in layers:
        assert 0 <= m[f"{layer}.clean_other_class"] <= 1 and 0 <= m[f"{layer}.adv_other_class"] <= 1
    # in the logits, a fooled adversarial image sits nearest another class far more often than a clean one
    assert m["net.classifier.4.adv_other_class"] > m["net.classifier.4.clean_other_class"]
    assert numbers["copy"] == m  # same weights, same seed: the same numbers


def test_the_analysis_evaluation_writes_figures_beside_the_parent(linear, tmp_path):
    from types import SimpleNamespace

    from robustcompress.evaluation import EVALUATIONS, EvalContext
    from robustcompress.plugins import load_plugins

    load_plugins()
    model, w, b, x = linear
    ev = EVALUATIONS.get("analysis")
    small = {"n_images": 4, "n_random": 2, "n_sections": 1, "scan": 8, "bisect": 4, "direction": "gradient"}
    cfg = ev.config_cls.parse({**small, "pca_resolution": 8, "section_resolution": 7})
    assert cfg.boundary and not cfg.tsne
    data = SimpleNamespace(test=ImageData(x, (x.flatten(1) @ w + b > 0).long()), info=None)
    ctx = EvalContext(data=data, device=torch.device("cpu"), parent=Linear2(w, b + 0.05), workdir=tmp_path)
    metrics = ev.run(model, cfg, ctx)
    assert all(k.startswith("analysis.boundary.") for k in metrics)
    assert metrics["analysis.boundary.has_gradients"] == 1 and metrics["analysis.boundary.n_images"] == 4
    pngs = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "analysis").iterdir())
    assert pngs == ["boundary-pca.png", "boundary-sections.png"]


def _checkpoint(trained_cnn8, tmp_path):
    from robustcompress.checkpoint import save_checkpoint

    model, _ = trained_cnn8
    return save_checkpoint(tmp_path / "cnn8", model, {"data": {"dataset": "fashion-mnist"}})


def test_cli_analyze_json_and_bad_input(trained_cnn8, data_root, tmp_path):
    from robustcompress.cli import main

    ckpt = _checkpoint(trained_cnn8, tmp_path)
    runner = CliRunner()
    args = ["analyze", str(ckpt), "--parent", str(ckpt), "--data-root", str(data_root), "--limit-test", "60",
            "--n-images", "3", "--n-random", "2", "--n-sections", "1", "--steps", "2",
            "--pca-resolution", "10", "--section-resolution", "9", "--out",
            str(tmp_path / "figs"), "--boundary", "--json", "--device", "cpu"]  # fmt: skip
    res = runner.invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["metrics"]["analysis.boundary.n_images"] == 3
    assert report["metrics"] == report["parent"]["metrics"]
    assert {"boundary_pca", "boundary_sections"} == set(report["figures"])
    assert all(_png_size(p)[0] > 0 for p in report["figures"].values())

    bad = runner.invoke(main, ["analyze", str(tmp_path / "missing"), "--json"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    bad = runner.invoke(main, [*args[:-6], "--tsne", "--tsne-class", "12", "--json"])
    assert bad.exit_code == 2 and "class 12" in bad.output
    bad = runner.invoke(main, [*args[:-6], "--tsne", "--layers", "net.nope", "--json"])
    assert bad.exit_code == 2 and "net.nope" in bad.output


def test_a_model_without_input_gradients_gets_the_prediction_only_figures(tmp_path):
    gen = torch.Generator().manual_seed(0)
    data = ImageData(torch.rand(60, 1, 8, 8, generator=gen), torch.arange(60) % 3)
    small = {"n_images": 4, "n_random": 2, "n_sections": 1, "scan": 8, "bisect": 4, "pca_resolution": 8}
    cfg = AnalysisConfig(
        tsne=True, tsne_images=10, tsne_reference=3, tsne_iter=250, section_resolution=7, **small
    )
    result = analyze({"const": Constant()}, data, cfg, tmp_path)
    assert set(result.figures) == {"boundary_pca", "boundary_sections", "tsne"}
    assert (
        "no adversarial direction" in result.notes["const"] and "clean images only" in result.notes["const"]
    )
    m = result.metrics["const"]
    assert m["analysis.boundary.has_gradients"] == 0 and m["analysis.boundary.pca_changes"] == 0.0
    assert "analysis.tsne.output.adv_other_class" not in m and "analysis.tsne.input.clean_other_class" in m
