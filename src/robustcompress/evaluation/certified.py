"""Certified robustness: randomized-smoothing certified accuracy and semantic PCA.

    [[evaluations]]
    type = "certified"
    method = "smoothing"          # or "semantic"
    sigma = [0.25, 0.5]
    n = 100000                    # default: 100,000 (smoothing), 1,000 (semantic)
    radii = [0, 0.25, 0.5, 0.75, 1.0]

Metrics (docs/certification.md):
  cert.smooth.s<sigma>.r<radius>   certified accuracy at that L2 radius (CERTIFY)
  cert.smooth.s<sigma>.acc         accuracy of the smoothed classifier (PREDICT, abstentions wrong)
  cert.smooth.s<sigma>.abstain     share of PREDICT abstentions
  cert.smooth.s<sigma>.radius_cap  sigma * Phi^-1(alpha^(1/n)), the largest radius n can certify
  cert.smooth.n / .n0 / .alpha / .n_examples   the parameters every figure depends on
  cert.pca.<family>                share of inputs certified P(correct) >= 1 - eps at confidence 1 - alpha
  cert.pca.<family>.acc            plain accuracy under the same transformations
  cert.pca.n / .eps / .alpha / .n_examples
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from robustcompress.certification.examples import run_groups
from robustcompress.certification.semantic import certify_semantic, check_pca, min_samples
from robustcompress.certification.smoothing import ABSTAIN, Smooth, check_smoothing, radius_cap
from robustcompress.certification.transforms import make_family
from robustcompress.device import model_device
from robustcompress.errors import ConfigError
from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)

DEFAULT_N = {"smoothing": 100_000, "semantic": 1_000}

# What the metrics mean, for the report. Order matters: the first matching pattern wins, and
# fnmatch's * matches dots, so the specific patterns come before `cert.smooth.*.r*`.
METRICS = [
    dict(
        pattern="cert.smooth.*.acc",
        kind="accuracy",
        better="higher",
        unit="fraction",
        description="accuracy of the smoothed classifier (PREDICT, abstentions wrong)",
    ),
    dict(
        pattern="cert.smooth.*.abstain",
        kind="ratio",
        better="lower",
        unit="fraction",
        description="share of inputs on which PREDICT abstains",
    ),
    dict(
        pattern="cert.smooth.*.radius_cap",
        kind="radius",
        better="none",
        unit="",
        description="largest radius the sample count can certify: sigma * Phi^-1(alpha^(1/n))",
    ),
    dict(
        pattern="cert.smooth.*.seconds",
        kind="latency",
        better="lower",
        unit="s",
        description="certification wall time per input",
    ),
    dict(
        pattern="cert.smooth.*.r*",
        kind="accuracy",
        better="higher",
        unit="fraction",
        description="certified accuracy at an L2 radius (randomized smoothing, CERTIFY)",
    ),
    dict(pattern="cert.*.n", kind="count", better="none", description="samples per input"),
    dict(pattern="cert.smooth.n0", kind="count", better="none", description="selection samples per input"),
    dict(
        pattern="cert.*.alpha",
        kind="ratio",
        better="none",
        description="failure probability of a certificate",
    ),
    dict(pattern="cert.pca.eps", kind="ratio", better="none", description="tolerated failure rate under T"),
    dict(pattern="cert.*.n_examples", kind="count", better="none", description="test inputs certified"),
    dict(
        pattern="cert.pca.*.acc",
        kind="accuracy",
        better="higher",
        unit="fraction",
        description="accuracy under transformations drawn from the family",
    ),
    dict(
        pattern="cert.pca.*.seconds",
        kind="latency",
        better="lower",
        unit="s",
        description="certification wall time per input",
    ),
    dict(
        pattern="cert.pca.*",
        kind="accuracy",
        better="higher",
        unit="fraction",
        description="probabilistically certified accuracy under a transformation family",
    ),
]

SMOOTH_COLUMNS = ["idx", "label", "predict", "radius", "correct", "smoothed", "p_lower", "count", "time"]
PCA_COLUMNS = ["idx", "label", "k", "n", "acc", "p_lower", "certified", "time"]


class CertifiedConfig(EvalConfig):
    method: Literal["smoothing", "semantic"] = "smoothing"
    sigma: float | list[float] = 0.25  # noise level(s) in [0, 1] pixels (smoothing)
    n: int | None = Field(None, ge=1)  # samples per input; None: 100,000 smoothing, 1,000 semantic
    n0: int = Field(100, ge=1)  # selection samples (smoothing)
    alpha: float = 0.001  # failure probability of each certificate
    radii: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    transforms: list[str] = Field(
        default_factory=lambda: ["rotation", "translation", "brightness", "contrast"]
    )
    eps: float = 0.05  # semantic: certified when P(correct) >= 1 - eps
    n_examples: int | None = Field(100, ge=1)  # inputs spread evenly over the test set; None: all
    batch_size: int = Field(1000, ge=1)
    seed: int = 0
    per_example: bool = True  # write per-input rows into the evaluation's workdir (a rerun resumes)

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v):
        values = v if isinstance(v, list) else [v]
        if not values or any(not s > 0 for s in values):
            raise ValueError("sigma must be > 0 (the noise standard deviation in [0, 1] pixels)")
        return v

    @field_validator("alpha", "eps")
    @classmethod
    def _probability(cls, v):
        if not 0 < v < 1:
            raise ValueError("must lie strictly between 0 and 1")
        return v

    @field_validator("radii")
    @classmethod
    def _radii(cls, v):
        if any(r < 0 for r in v):
            raise ValueError("radii must be >= 0")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        self.validate_all()  # raises ConfigError (n0 > n, unknown family) when the config is read
        return self

    @property
    def sigmas(self) -> list[float]:
        return [float(s) for s in (self.sigma if isinstance(self.sigma, list) else [self.sigma])]

    @property
    def samples(self) -> int:
        return self.n if self.n is not None else DEFAULT_N[self.method]

    def validate_all(self) -> None:
        """Checks across fields (n0 <= n, known transformations): ConfigError naming the fix."""
        if self.method == "smoothing":
            for s in self.sigmas:
                check_smoothing(s, self.n0, self.samples, self.alpha)
        else:
            check_pca(self.samples, self.eps, self.alpha)
            if not self.transforms:
                raise ConfigError("semantic certification needs at least one transformation family")
            for spec in self.transforms:
                make_family(spec)


def _num(x: float) -> str:
    return f"{x:g}"


def example_indices(size: int, n_examples: int | None) -> list[int]:
    """n_examples inputs spread evenly over a test set (every k-th, as Cohen et al.'s --skip)."""
    if n_examples is None or n_examples >= size:
        return list(range(size))
    return list(range(0, size, size // n_examples))[:n_examples]


def fingerprint(model: nn.Module) -> str:
    """A short hash of the model's weights: a per-example file of another model is not resumed."""
    h = hashlib.sha256()
    for t in model.state_dict().values():  # values only: a wrapper of the same weights is the same model
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _certify_examples(model, data, cfg: CertifiedConfig, group, columns, header, per_example, log):
    """`group` over the chosen test inputs, batch_size // n of them at a time, resumable from
    `per_example`; the file's header gains the settings both methods share (alpha, seed, batch
    size, the model's fingerprint and device), so a rerun with other settings is refused."""
    header = {
        **header,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "model": fingerprint(model),
        "device": model_device(model).type,
    }
    return run_groups(
        example_indices(len(data), cfg.n_examples),
        max(1, cfg.batch_size // cfg.samples),
        group,
        columns=columns,
        header=header,
        seed=cfg.seed,
        device=model_device(model),
        per_example=per_example,
        log=log,
    )


def smoothing_rows(
    model: nn.Module,
    data,
    cfg: CertifiedConfig,
    sigma: float,
    per_example: str | Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> list[dict]:
    """CERTIFY (and PREDICT on the same samples) for each chosen test input: one row each."""
    n = cfg.samples
    check_smoothing(sigma, cfg.n0, n, cfg.alpha)
    smooth = Smooth(model, sigma, cfg.batch_size)

    def group(indices: list[int], generator: torch.Generator) -> list[dict]:
        certs = smooth.certify(data.x[indices], cfg.n0, n, cfg.alpha, generator)
        labels = data.y[indices].tolist()
        return [
            {
                "label": y,
                "predict": c.prediction,
                "radius": c.radius,
                "correct": int(c.prediction == y),
                "smoothed": c.smoothed,
                "p_lower": c.p_lower,
                "count": c.count,
            }
            for c, y in zip(certs, labels)
        ]

    header = {"method": "smoothing", "sigma": sigma, "n": n, "n0": cfg.n0}
    return _certify_examples(model, data, cfg, group, SMOOTH_COLUMNS, header, per_example, log)


def smoothing_metrics(rows: list[dict], cfg: CertifiedConfig, sigma: float) -> Metrics:
    s = f"cert.smooth.s{_num(sigma)}"
    total = max(len(rows), 1)
    m: Metrics = {}
    for r in cfg.radii:
        m[f"{s}.r{_num(r)}"] = sum(row["correct"] == 1 and row["radius"] >= r for row in rows) / total
    m[f"{s}.acc"] = sum(row["smoothed"] == row["label"] for row in rows) / total
    m[f"{s}.abstain"] = sum(row["smoothed"] == ABSTAIN for row in rows) / total
    m[f"{s}.radius_cap"] = radius_cap(sigma, cfg.samples, cfg.alpha)
    m[f"{s}.seconds"] = sum(row["time"] for row in rows) / total
    return m


def semantic_rows(
    model: nn.Module,
    data,
    cfg: CertifiedConfig,
    spec: str,
    per_example: str | Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> list[dict]:
    """n transformations from family `spec` per chosen test input: k correct, certified or not."""
    n = cfg.samples
    family = make_family(spec)

    def group(indices: list[int], generator: torch.Generator) -> list[dict]:
        y = data.y[indices]
        res = certify_semantic(
            model, data.x[indices], y, family, n, cfg.eps, cfg.alpha, generator, cfg.batch_size
        )
        return [
            {
                "label": label,
                "k": r.correct,
                "n": n,
                "acc": r.correct / n,
                "p_lower": r.p_lower,
                "certified": int(r.certified),
            }
            for r, label in zip(res, y.tolist())
        ]

    header = {"method": "semantic", "family": family.describe(), "n": n, "eps": cfg.eps}
    return _certify_examples(model, data, cfg, group, PCA_COLUMNS, header, per_example, log)


def semantic_metrics(rows: list[dict], cfg: CertifiedConfig, spec: str) -> Metrics:
    name = make_family(spec).name
    total = max(len(rows), 1)
    return {
        f"cert.pca.{name}": sum(row["certified"] == 1 for row in rows) / total,
        f"cert.pca.{name}.acc": sum(row["k"] for row in rows) / (total * cfg.samples),
        f"cert.pca.{name}.seconds": sum(row["time"] for row in rows) / total,
    }


def run_certified(
    model: nn.Module,
    data,
    cfg: CertifiedConfig,
    device: torch.device,
    per_example_dir: str | Path | None = None,
    per_example: str | Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Metrics:
    """Every figure of a `certified` evaluation. Per-example rows go to `per_example` (one method
    and one sigma or family only) or, one file each, into `per_example_dir`."""
    cfg.validate_all()
    keys = cfg.sigmas if cfg.method == "smoothing" else cfg.transforms
    if per_example is not None and len(keys) > 1:
        raise ConfigError(
            f"one per-example file holds one {'sigma' if cfg.method == 'smoothing' else 'family'}; "
            f"certify {', '.join(map(str, keys))} one at a time"
        )
    model.to(device)
    n = len(example_indices(len(data), cfg.n_examples))
    metrics: Metrics = {}

    def file_for(tag: str):
        if per_example is not None:
            return per_example
        return Path(per_example_dir) / f"certified-{tag}.tsv" if per_example_dir is not None else None

    if cfg.method == "smoothing":
        metrics.update(
            {
                "cert.smooth.n": cfg.samples,
                "cert.smooth.n0": cfg.n0,
                "cert.smooth.alpha": cfg.alpha,
                "cert.smooth.n_examples": n,
            }
        )
        for sigma in cfg.sigmas:
            cap = radius_cap(sigma, cfg.samples, cfg.alpha)
            log(
                f"randomized smoothing: sigma {sigma:g}, n {cfg.samples}, n0 {cfg.n0}, alpha {cfg.alpha:g}, "
                f"{n} inputs; radius cap {cap:.3f}"
            )
            rows = smoothing_rows(model, data, cfg, sigma, file_for(f"smoothing-s{_num(sigma)}"), log)
            metrics.update(smoothing_metrics(rows, cfg, sigma))
    else:
        needed = min_samples(cfg.eps, cfg.alpha)
        if cfg.samples < needed:
            log(
                f"warning: n = {cfg.samples} cannot certify any input at eps {cfg.eps:g}, "
                f"alpha {cfg.alpha:g} (zero failures need n >= {needed})"
            )
        metrics.update(
            {
                "cert.pca.n": cfg.samples,
                "cert.pca.eps": cfg.eps,
                "cert.pca.alpha": cfg.alpha,
                "cert.pca.n_examples": n,
            }
        )
        for spec in cfg.transforms:
            log(
                f"PCA under {make_family(spec).describe()}: n {cfg.samples}, eps {cfg.eps:g}, "
                f"alpha {cfg.alpha:g}, {n} inputs"
            )
            tag = "semantic-" + "".join(
                c if c.isalnum() or c in "-_." else "_" for c in make_family(spec).name
            )
            rows = semantic_rows(model, data, cfg, spec, file_for(tag), log)
            metrics.update(semantic_metrics(rows, cfg, spec))
    return metrics


@register_evaluation("certified", CertifiedConfig, metrics=[MetricSpec(**m) for m in METRICS])
def evaluate_certified(model: nn.Module, cfg: CertifiedConfig, ctx: EvalContext) -> Metrics:
    folder = ctx.workdir if cfg.per_example and ctx.workdir is not None else None
    return run_certified(model, ctx.data.test, cfg, ctx.device, per_example_dir=folder, log=ctx.log)
