"""Corruption robustness: top-1 error per corruption and severity, CE, mCE and relative mCE.

CE_c = sum_s E(model, c, s) / sum_s E(baseline, c, s) * 100, mCE = mean of CE_c over the suite's
benchmark corruptions (extras are reported, never averaged in), relative CE_c uses E - E_clean of
each model (Hendrycks and Dietterich 2019). The baseline, in order of preference:
  1. `baseline = "alexnet"`: the published AlexNet ImageNet-C errors (for ImageNet-C only);
  2. `ctx.baseline_metrics` when it holds every needed `err.<name>.<severity>` (the parent's
     results in a run, so the parent scores 100 as in paper 000);
  3. `ctx.parent`, evaluated here on the very same corrupted images;
  4. the model itself (every CE is then 100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from robustcompress.corruptions import CHUNK, SUITES, corrupt_quantized, load_frost_images
from robustcompress.corruptions.dataset import CorruptedFolder
from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)
from robustcompress.measure import predict

# Mean top-1 error over severities 1-5 of AlexNet on ImageNet-C (Hendrycks and Dietterich 2019),
# the usual normaliser of ImageNet-C mCE, and AlexNet's clean top-1 error for relative mCE.
ALEXNET_IMAGENET_C = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERR = 0.4345


class CorruptionEvalConfig(EvalConfig):
    suite: str = Field("cifar-c", description="a corruption suite from robustcompress.corruptions.SUITES")
    corruptions: list[str] | None = None  # None: the suite's benchmark corruptions (+ extras, below)
    extras: bool = True  # with corruptions = None, also the extras (reported, never in mCE)
    severities: list[int] | None = None  # None: all of the suite's severities (1..5; MNIST-C has 1)
    source: str | None = None  # folder of a written corrupted dataset; None = corrupt on the fly
    n_examples: int | None = Field(None, ge=1)
    batch_size: int = Field(256, ge=1)
    seed: int = 0
    baseline: Literal["auto", "self", "alexnet"] = "auto"
    frost_images: list[str] | None = None  # photos of frost instead of the procedural texture
    heatmap: bool = False  # write corruption_heatmap.png into the evaluation's workdir

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, value: str) -> str:
        if value not in SUITES:
            raise ValueError(
                f"unknown corruption suite {value!r}; choose one of: {', '.join(SUITES.names())}"
            )
        return value


CORRUPTION_METRICS = [
    MetricSpec("err.*.*", "error", "lower", "fraction", "top-1 error under a corruption at a severity"),
    MetricSpec("ce.*", "error", "lower", "score", "corruption error, 100 = the baseline"),
    MetricSpec("mce", "error", "lower", "score", "mean corruption error over the benchmark, 100 = baseline"),
    MetricSpec("mce.relative", "error", "lower", "score", "mean of (error - clean error), 100 = baseline"),
    MetricSpec("corruption.err_*", "error", "lower", "fraction", "top-1 error (clean, or mean corrupted)"),
    MetricSpec("corruption.acc_mean", "accuracy", "higher", "fraction", "mean accuracy over the benchmark"),
    MetricSpec("corruption.baseline", "label", "none", "", "what CE is relative to"),
]


def _chosen(cfg: CorruptionEvalConfig) -> tuple[list[str], list[int]]:
    """The corruptions and severities to evaluate; with a source folder, by default those it holds."""
    suite = SUITES.get(cfg.suite)
    names = cfg.corruptions if cfg.corruptions is not None else suite.names(extras=cfg.extras)
    severities = cfg.severities
    if cfg.source and cfg.corruptions is None:
        folder = CorruptedFolder.open(cfg.source)
        names = [n for n in names if n in folder.corruptions] or names
        severities = severities or [s for s in suite.severities if s in folder.severities]
    return suite.select(names, severities)


def _keys(names: list[str], sevs: list[int]) -> list[tuple[str, int]]:
    return [(n, s) for n in names for s in sevs]


@torch.no_grad()
def corruption_errors(
    models: list[nn.Module], data, cfg: CorruptionEvalConfig, device: torch.device, log=lambda m: None
) -> list[dict]:
    """Top-1 errors of each model: {"clean": e, (name, severity): e}, every model on the same images."""
    names, sevs = _chosen(cfg)
    n = len(data) if cfg.n_examples is None else min(cfg.n_examples, len(data))
    x_all, y_all = data.x[:n], data.y[:n]
    for m in models:
        m.to(device)
    results = [{} for _ in models]

    def score(key, batches):
        wrong, total = [0] * len(models), 0
        for xb, yb in batches:
            xb, yb = xb.to(device), yb.to(device)
            for i, m in enumerate(models):
                wrong[i] += int((predict(m, xb, cfg.batch_size) != yb).sum())
            total += len(yb)
        for i in range(len(models)):
            results[i][key] = wrong[i] / max(total, 1)

    score("clean", ((x_all[i : i + CHUNK], y_all[i : i + CHUNK]) for i in range(0, n, CHUNK)))
    if cfg.source:
        folder = CorruptedFolder.open(cfg.source)
        for name, sev in _keys(names, sevs):
            log(f"corruption {name} severity {sev} (from {folder.root})")
            score((name, sev), folder.batches(name, sev, max(cfg.batch_size, CHUNK), n))
        return results
    frost = load_frost_images(cfg.frost_images) if cfg.frost_images else None

    def on_the_fly(name, sev):
        for i in range(0, n, CHUNK):
            xb = x_all[i : i + CHUNK].to(device)
            q = corrupt_quantized(xb, name, sev, suite=cfg.suite, seed=cfg.seed, start=i, frost_images=frost)
            yield q.float() / 255, y_all[i : i + CHUNK]

    for name, sev in _keys(names, sevs):
        log(f"corruption {name} severity {sev}")
        score((name, sev), on_the_fly(name, sev))
    return results


def summarize(
    errors: dict, baseline: dict | None, suite: str, names: list[str], sevs: list[int], label: str
) -> Metrics:
    """Metrics from errors {(name, sev): e, "clean": e} and a baseline's (None: CE = 100)."""
    s = SUITES.get(suite)
    out: Metrics = {f"err.{n}.{v}": errors[(n, v)] for n, v in _keys(names, sevs)}
    out["corruption.err_clean"] = errors["clean"]
    out["corruption.baseline"] = label
    base = baseline or errors
    ces, rel = [], []
    for name in names:
        num = sum(errors[(name, v)] for v in sevs)
        den = sum(base[(name, v)] for v in sevs)
        num_rel = sum(errors[(name, v)] - errors["clean"] for v in sevs)
        den_rel = sum(base[(name, v)] - base["clean"] for v in sevs)
        if den > 0:
            out[f"ce.{name}"] = 100 * num / den
            if name in s.corruptions:
                ces.append(out[f"ce.{name}"])
        if name in s.corruptions and den_rel > 0:
            rel.append(100 * num_rel / den_rel)
    bench = [n for n in names if n in s.corruptions]
    if bench and len(ces) == len(bench):
        out["mce"] = sum(ces) / len(ces)
    if bench and len(rel) == len(bench):
        out["mce.relative"] = sum(rel) / len(rel)
    if bench:
        errs = [errors[(n, v)] for n, v in _keys(bench, sevs)]
        out["corruption.err_mean"] = sum(errs) / len(errs)
        out["corruption.acc_mean"] = 1 - out["corruption.err_mean"]
    return out


def _from_metrics(metrics: dict, names: list[str], sevs: list[int]) -> dict | None:
    """A baseline's errors from its metrics dict, or None when one is missing."""
    try:
        base = {(n, v): float(metrics[f"err.{n}.{v}"]) for n, v in _keys(names, sevs)}
    except KeyError:
        return None
    if "corruption.err_clean" in metrics:
        base["clean"] = float(metrics["corruption.err_clean"])
    elif "acc.clean" in metrics:
        base["clean"] = 1 - float(metrics["acc.clean"])
    else:
        return None
    return base


def _alexnet(names: list[str], sevs: list[int]) -> dict:
    from robustcompress.errors import ConfigError

    missing = [n for n in names if n not in ALEXNET_IMAGENET_C]
    if missing or sorted(sevs) != [1, 2, 3, 4, 5]:
        raise ConfigError(
            "baseline 'alexnet' has the 15 ImageNet-C benchmark corruptions at severities 1-5 only; "
            f"drop {missing or 'the severity choice'} or use baseline 'auto'"
        )
    base = {(n, v): ALEXNET_IMAGENET_C[n] for n, v in _keys(names, sevs)}
    base["clean"] = ALEXNET_CLEAN_ERR
    return base


@register_evaluation(
    "corruption", CorruptionEvalConfig, metrics=CORRUPTION_METRICS, needs=("parent", "baseline_metrics")
)
def evaluate_corruption(model: nn.Module, cfg: CorruptionEvalConfig, ctx: EvalContext) -> Metrics:
    names, sevs = _chosen(cfg)
    baseline, label = None, "self"
    models = [model]
    if cfg.baseline == "alexnet":
        baseline, label = _alexnet(names, sevs), "alexnet-imagenet-c"
    elif cfg.baseline == "auto":
        if ctx.baseline_metrics:
            baseline = _from_metrics(ctx.baseline_metrics, names, sevs)
            label = "baseline-metrics" if baseline else label
        if baseline is None and ctx.parent is not None:
            models.append(ctx.parent)
            label = "parent"
    errors = corruption_errors(models, ctx.data.test, cfg, ctx.device, ctx.log)
    if label == "parent":
        baseline = errors[1]
    metrics = summarize(errors[0], baseline, cfg.suite, names, sevs, label)
    if cfg.heatmap and ctx.workdir is not None:
        from robustcompress.corruptions.pictures import error_heatmap

        error_heatmap(metrics, Path(ctx.workdir) / "corruption_heatmap.png")
    return metrics
