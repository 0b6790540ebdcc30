"""The `analysis` evaluation: boundary and t-SNE figures of a model (beside its parent) and their numbers.

Metrics (all under `analysis.`):
  analysis.boundary.dist_adv          median distance to the boundary along the adversarial direction
  analysis.boundary.dist_random       median (over images) of the median distance along random directions
  analysis.boundary.adv_over_random   median over images of their ratio (small: the boundary is much
                                      closer along the adversarial direction, Fawzi et al.)
  analysis.boundary.curvature         median signed curvature x distance in the (adversarial, random) plane
  analysis.boundary.censored_adv / censored_random   share of rays with no boundary within max_dist
  analysis.boundary.pca_changes       share of neighbouring cells of paper 002's PCA grid that change class
  analysis.boundary.pca_confidence    mean confidence on that grid
  analysis.boundary.has_gradients     1, or 0 when only random directions could be used
  analysis.tsne.<layer>.adv_other_class / clean_other_class, analysis.tsne.attack_success
Figures go to <workdir>/analysis/<model fingerprint>-{boundary-pca,boundary-sections,tsne}.png.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)

# What the metrics mean, for the report (fields of evaluation.registry.MetricSpec).
METRIC_SPECS: list[dict[str, str]] = [
    {"pattern": "analysis.boundary.dist_*", "kind": "distance", "better": "higher", "unit": "",
     "description": "median distance from a test image to the decision boundary along a direction"},
    {"pattern": "analysis.boundary.adv_over_random", "kind": "ratio", "better": "higher", "unit": "",
     "description": "adversarial over random boundary distance (median over images)"},
    {"pattern": "analysis.boundary.curvature", "kind": "ratio", "better": "none", "unit": "",
     "description": "signed boundary curvature times distance; 0 for a flat boundary"},
    {"pattern": "analysis.boundary.censored_*", "kind": "fraction", "better": "none", "unit": "fraction",
     "description": "share of rays that met no boundary within max_dist"},
    {"pattern": "analysis.boundary.pca_changes", "kind": "fraction", "better": "lower",
     "unit": "fraction",
     "description": "share of neighbouring cells of the PCA-plane grid whose predicted class differs"},
    {"pattern": "analysis.boundary.pca_confidence", "kind": "fraction", "better": "none", "unit": "fraction",
     "description": "mean confidence on the PCA-plane grid"},
    {"pattern": "analysis.boundary.has_gradients", "kind": "flag", "better": "none", "unit": "",
     "description": "1 when the adversarial direction could be computed"},
    {"pattern": "analysis.boundary.max_dist", "kind": "distance", "better": "none", "unit": "",
     "description": "the cap of every line search"},
    {"pattern": "analysis.*.n_images", "kind": "count", "better": "none", "unit": "",
     "description": "images measured"},
    {"pattern": "analysis.tsne.class", "kind": "count", "better": "none", "unit": "",
     "description": "the class whose features are embedded"},
    {"pattern": "analysis.tsne.*.adv_other_class", "kind": "fraction", "better": "lower",
     "unit": "fraction",
     "description": "share of adversarial features whose nearest clean reference is of another class"},
    {"pattern": "analysis.tsne.*.clean_other_class", "kind": "fraction", "better": "lower",
     "unit": "fraction",
     "description": "share of clean features whose nearest clean reference is of another class"},
    {"pattern": "analysis.tsne.attack_success", "kind": "fraction", "better": "lower",
     "unit": "fraction",
     "description": "share of the class's PGD images the model misclassifies"},
]  # fmt: skip


class AnalysisConfig(EvalConfig):
    """Boundary figures and numbers (on by default) and the t-SNE of features (off: it is slower)."""

    boundary: bool = True
    tsne: bool = False
    norm: Literal["linf", "l2"] = "linf"
    eps: float = Field(0.1, gt=0, description="attack radius: PGD budget, the ball drawn in sections")
    steps: int = Field(20, ge=1, description="PGD steps for adversarial directions and t-SNE images")
    direction: Literal["pgd", "gradient"] = "pgd"
    n_images: int = Field(20, ge=1, description="test images whose boundary distances are measured")
    n_random: int = Field(8, ge=1, description="random directions per image")
    max_dist: float | None = Field(None, gt=0, description="line-search cap (default: the [0,1] box)")
    scan: int = Field(32, ge=2)
    bisect: int = Field(16, ge=0)
    n_sections: int = Field(3, ge=0, description="images drawn as cross-sections")
    section_resolution: int = Field(41, ge=5)
    section_extent: float | None = Field(None, gt=0, description="half-width of a section (default 4 eps)")
    pca_images: int = Field(1000, ge=3)
    pca_resolution: int = Field(60, ge=5)
    tsne_class: int = Field(0, ge=0)
    tsne_images: int = Field(100, ge=4)
    tsne_reference: int = Field(20, ge=1, description="clean reference images per class")
    tsne_layers: list[str] | None = None
    perplexity: float = Field(30.0, gt=0)
    tsne_iter: int = Field(1000, ge=250)
    batch_size: int = Field(512, ge=1)


@dataclass
class AnalysisResult:
    metrics: dict[str, Metrics] = field(default_factory=dict)  # model name -> metrics
    figures: dict[str, Path] = field(default_factory=dict)  # kind -> PNG
    notes: dict[str, str] = field(default_factory=dict)  # model name -> what could not be drawn


def analyze(
    models: dict[str, nn.Module],
    test: Any,
    cfg: AnalysisConfig,
    out_dir: str | Path | None,
    *,
    seed: int = 0,
    class_names: list[str] | None = None,
    stem: str = "",
    log: Callable[[str], None] | None = None,
) -> AnalysisResult:
    """Analyse each model on the test ImageData; compared models share figures (same axes, colours).

    Figures are written to out_dir/<stem><kind>.png (none when out_dir is None).
    """
    from robustcompress.analysis import boundary as bd
    from robustcompress.analysis.figures import save_png

    log = log or (lambda msg: None)
    result = AnalysisResult(metrics={name: {} for name in models})
    out = Path(out_dir) if out_dir is not None else None
    num_classes = max(int(test.y.max()) + 1, len(class_names or [])) if len(test.y) else 1
    if cfg.boundary:
        gen = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(test), generator=gen)[: cfg.n_images]
        x = test.x[chosen]
        gradients = {}
        for name, model in models.items():
            gradients[name] = bd.has_input_gradients(model, x[:1])
            if not gradients[name]:
                result.notes[name] = (
                    "no input gradients: boundaries by prediction only (PCA plane, random directions); "
                    "no adversarial direction, so no dist_adv, adv_over_random or curvature"
                )
                log(f"{name}: {result.notes[name]}")
            log(f"{name}: boundary distances on {len(x)} images")
            dists = bd.boundary_distances(
                model, x, norm=cfg.norm, eps=cfg.eps, n_random=cfg.n_random, max_dist=cfg.max_dist,
                direction=cfg.direction, steps=cfg.steps, seed=seed, scan=cfg.scan, bisect=cfg.bisect,
                batch_size=cfg.batch_size, gradients=gradients[name],
            )  # fmt: skip
            result.metrics[name].update(dists.metrics())
        log("boundary: PCA plane")
        fig, numbers = bd.pca_plane(
            models, test.x[: cfg.pca_images], test.y[: cfg.pca_images], resolution=cfg.pca_resolution,
            batch_size=cfg.batch_size, class_names=class_names, num_classes=num_classes,
        )  # fmt: skip
        for name, values in numbers.items():
            result.metrics[name].update({f"analysis.boundary.{k}": v for k, v in values.items()})
        _save(result, out, f"{stem}boundary-pca.png", "boundary_pca", fig, save_png)
        if cfg.n_sections:
            log("boundary: cross-sections")
            picks = chosen[: cfg.n_sections]
            titles = [f"test image {int(i)} ({_label(int(test.y[i]), class_names)})" for i in picks]
            fig = bd.cross_sections(
                models, test.x[picks], norm=cfg.norm, eps=cfg.eps, extent=cfg.section_extent,
                resolution=cfg.section_resolution, direction=cfg.direction, steps=cfg.steps, seed=seed,
                batch_size=cfg.batch_size, titles=titles, class_names=class_names,
                num_classes=num_classes, gradients=gradients,
            )  # fmt: skip
            _save(result, out, f"{stem}boundary-sections.png", "boundary_sections", fig, save_png)
    if cfg.tsne:
        from robustcompress.analysis.tsne import tsne_analysis

        fig, numbers, notes = tsne_analysis(
            models, test, cfg.tsne_class, n_images=cfg.tsne_images, n_reference=cfg.tsne_reference,
            layers=cfg.tsne_layers, eps=cfg.eps, norm=cfg.norm, steps=cfg.steps, seed=seed,
            perplexity=cfg.perplexity, max_iter=cfg.tsne_iter, batch_size=cfg.batch_size,
            class_names=class_names, log=log,
        )  # fmt: skip
        for name, values in numbers.items():
            result.metrics[name].update({f"analysis.tsne.{k}": v for k, v in values.items()})
        for name, note in notes.items():
            result.notes[name] = "; ".join(filter(None, [result.notes.get(name), note]))
        _save(result, out, f"{stem}tsne.png", "tsne", fig, save_png)
    return result


def _save(result: AnalysisResult, out: Path | None, filename: str, kind: str, fig, save_png) -> None:
    if out is None:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return
    result.figures[kind] = save_png(fig, out / filename)


def _label(c: int, class_names: list[str] | None) -> str:
    return class_names[c] if class_names and c < len(class_names) else f"class {c}"


def fingerprint(model: nn.Module) -> str:
    """Short hash of the weights: names a model's figures in a folder several models share."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:10]


@register_evaluation("analysis", AnalysisConfig, metrics=[MetricSpec(**m) for m in METRIC_SPECS])
def evaluate_analysis(model: nn.Module, cfg: AnalysisConfig, ctx: EvalContext) -> Metrics:
    """The model's numbers; its figures (beside the parent's, when there is one) in ctx.workdir/analysis."""
    model.to(ctx.device)
    models = {"this model": model}
    if ctx.parent is not None:
        models = {"parent": ctx.parent.to(ctx.device), **models}
    info = getattr(ctx.data, "info", None)
    out = Path(ctx.workdir) / "analysis" if ctx.workdir is not None else None
    if out is None:
        ctx.log("analysis: no working folder, figures are not written")
    result = analyze(
        models, ctx.data.test, cfg, out, seed=ctx.seed,
        class_names=list(info.class_names) if info is not None and info.class_names else None,
        stem=f"{fingerprint(model)}-", log=ctx.log,
    )  # fmt: skip
    for path in result.figures.values():
        ctx.log(f"analysis: wrote {path}")
    return result.metrics["this model"]
