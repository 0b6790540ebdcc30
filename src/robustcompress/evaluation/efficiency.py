"""Efficiency: parameters, non-zeros, sparsity, MACs and measured CPU latency; per-layer sparsity.

Metrics (evaluation `efficiency`):
- `params`: every parameter entry (a masked weight counts once, at its full size);
- `params.nonzero`: entries that are not exactly zero (masks applied);
- `sparsity`: fraction of zeros among conv and linear weights (what pruning targets);
- `macs`: multiply-accumulates of one image through conv and linear layers (forward hooks);
- `macs.nonzero`: the same counting only non-zero weights (what sparse kernels could reach);
- `latency.cpu_ms.b1`, `latency.cpu_ms.b64`: median wall time of a forward pass on the CPU under
  torch.inference_mode, after warm-up, in milliseconds, and `<name>.iqr` its interquartile range;
  `latency.cpu_threads`: torch's intra-op thread count during the measurement (set it with
  `threads`, default: torch's current setting); `latency.rounds`: timed passes per model;
- with a parent, both are timed interleaved (evaluation/latency.py): `<name>.ratio` is the median
  per-round ratio of this model's time to the parent's and `flag.<name>` says when the two cannot be
  ranked. In a study (`run`) latency is not timed here but in a phase of its own once every
  experiment is done, each baseline with its compressed models (experiments/latency_phase.py);
- `latency.<runtime>.cpu_ms.b<N>`: the same in a deployment runtime listed in `runtimes`:
  `torchscript` (traced, frozen and `optimize_for_inference`: batch norm folded, conv + ReLU fused)
  or `onnxruntime` (fp32 ONNX Runtime, whose graph optimisations fuse the same). Eager PyTorch runs
  batch norm, ReLU and pooling as separate passes over the activations, which shrink only with the
  channel count while convolutions shrink with its square: a deployment runtime shows more of a
  channel-pruned model's MAC reduction as speed.
With a parent (the uncompressed model), `params.reduction` and `macs.reduction` are parent / this.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from robustcompress.capabilities import runs_in_torch
from robustcompress.device import model_device
from robustcompress.evaluation.latency import Runtime, compared_latency, deployed
from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)
from robustcompress.fileio import atomic_path, atomic_write_text
from robustcompress.measure import count_macs, count_params, layer_sparsity, sparsity

__all__ = [  # the counts live in robustcompress.measure; importable from here as before
    "EfficiencyConfig",
    "count_macs",
    "count_params",
    "deployed",
    "efficiency_metrics",
    "latency_metrics",
    "layer_sparsity",
    "measure_latency",
    "plot_layer_sparsity",
    "sparsity",
    "sparsity_table",
]


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    runtime: Runtime = "eager",
) -> float:
    """Median milliseconds of a CPU forward pass of a (batch_size, *input_shape) batch in `runtime`."""
    x = torch.rand(batch_size, *input_shape, generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        run = deployed(model, runtime, x, threads)
        with torch.inference_mode():
            for _ in range(warmup):
                run(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return 1000 * statistics.median(times)


def sparsity_table(rows: list[dict] | dict[str, list[dict]]) -> str:
    """Markdown table of `layer_sparsity` rows; a dict of label -> rows gives one sparsity column each."""
    labelled = rows if isinstance(rows, dict) else {"sparsity": rows}
    labels = list(labelled)
    first = labelled[labels[0]]
    lines = [
        "| layer | type | weights | " + " | ".join(labels) + " |",
        "|---|---|---:|" + "---:|" * len(labels),
    ]
    for i, r in enumerate(first):
        cells = " | ".join(f"{labelled[lab][i]['sparsity']:.3f}" for lab in labels)
        lines.append(f"| {r['layer']} | {r['type']} | {r['weights']} | {cells} |")
    return "\n".join(lines)


def plot_layer_sparsity(
    rows: dict[str, list[dict]], path: str | Path, title: str = "Sparsity by layer"
) -> Path:
    """Grouped bar plot of per-layer sparsity (one bar colour per label), written to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    n_layers = len(rows[labels[0]])
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * n_layers + 2), 3.5))
    for j, label in enumerate(labels):
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(n_layers)]
        ax.bar(xs, [r["sparsity"] for r in rows[label]], width, label=label)
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels([str(i + 1) for i in range(n_layers)])
    ax.set_xlabel("prunable layer (model order)")
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


class EfficiencyConfig(EvalConfig):
    latency: bool = Field(True, description="measure CPU latency (slow for big models)")
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    repeats: int = Field(20, ge=1)
    warmup: int = Field(3, ge=0)
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads while timing (default: current)"
    )
    runtimes: list[Runtime] = Field(
        default_factory=lambda: ["eager"], description="eager, torchscript, onnxruntime (fp32)"
    )
    layer_table: bool = Field(True, description="write layer_sparsity.md and .png into the workdir")


def efficiency_metrics(model: nn.Module, example_input: torch.Tensor, cfg: EfficiencyConfig | None = None,
                       parent: nn.Module | None = None) -> Metrics:  # fmt: skip
    """The metrics of the `efficiency` evaluation for `model` on inputs shaped like `example_input`."""
    cfg = cfg or EfficiencyConfig()
    in_torch = runs_in_torch(model)  # a compiled model (ONNX Runtime int8) has no parameters to count
    metrics: Metrics = {}
    if in_torch:
        params, nonzero = count_params(model)
        macs, macs_nonzero = count_macs(model, example_input)
        metrics = {"params": params, "params.nonzero": nonzero, "sparsity": sparsity(model)}
        metrics.update({"macs": macs, "macs.nonzero": macs_nonzero})
        if parent is not None:
            parent_macs, _ = count_macs(parent, example_input.to(model_device(parent)))
            metrics["params.reduction"] = count_params(parent)[0] / max(params, 1)
            metrics["macs.reduction"] = parent_macs / max(macs, 1)
    if cfg.latency:
        metrics.update(latency_metrics(model, example_input.shape[1:], cfg, parent))
    return metrics


def latency_metrics(
    model: nn.Module, shape: Sequence[int], cfg: EfficiencyConfig, parent: nn.Module | None = None
) -> Metrics:
    """The latency metrics of `cfg` for `model`; with a parent, both timed interleaved (latency.py)
    and the ratio to the parent stored beside each figure."""
    models = {"model": model} if parent is None else {"model": model, "parent": parent}
    measured = compared_latency(
        models,
        shape,
        batch_sizes=cfg.batch_sizes,
        runtimes=cfg.runtimes,
        rounds=cfg.repeats,
        warmup=cfg.warmup,
        threads=cfg.threads,
        reference=None if parent is None else "parent",
    )
    return measured["model"]


EFFICIENCY_METRICS = [
    MetricSpec("params", "count", "lower", "", "parameter entries"),
    MetricSpec("params.nonzero", "count", "lower", "", "parameter entries that are not zero"),
    MetricSpec("sparsity", "sparsity", "higher", "fraction", "share of zeros among conv and linear weights"),
    MetricSpec("macs", "count", "lower", "", "multiply-accumulates of one image"),
    MetricSpec("macs.nonzero", "count", "lower", "", "multiply-accumulates with non-zero weights"),
    MetricSpec("*.reduction", "ratio", "higher", "x", "the parent's count over this model's"),
    MetricSpec("latency.cpu_threads", "count", "none", "", "torch intra-op threads while timing"),
    MetricSpec(
        "latency.*cpu_ms.b*.ratio",
        "ratio",
        "lower",
        "x",
        "median per-round ratio of this model's forward time to its baseline's, timed interleaved",
    ),
    MetricSpec("latency.*cpu_ms.b*.iqr", "latency", "none", "ms", "interquartile range of the timed rounds"),
    MetricSpec("latency.rounds", "count", "none", "", "timed rounds per model"),
    MetricSpec(
        "flag.latency.*",
        "flag",
        "none",
        "",
        "the latency cannot be ranked against the baseline's: their per-round times overlap",
    ),
    MetricSpec("latency.*cpu_ms.b*", "latency", "lower", "ms", "median CPU forward time of a batch"),
]


@register_evaluation("efficiency", EfficiencyConfig, metrics=EFFICIENCY_METRICS, needs="parent")
def evaluate_efficiency(model: nn.Module, cfg: EfficiencyConfig, ctx: EvalContext) -> Metrics:
    example = ctx.data.test.x[:1].to(ctx.device)
    model.to(ctx.device)
    if ctx.latency_phase:  # a study times its models afterwards, together (experiments/latency_phase.py)
        cfg = cfg.model_copy(update={"latency": False})
    metrics = efficiency_metrics(model, example, cfg, ctx.parent)
    if cfg.layer_table and ctx.workdir is not None:
        rows = layer_sparsity(model)
        atomic_write_text(Path(ctx.workdir) / "layer_sparsity.md", sparsity_table(rows) + "\n")
        plot_layer_sparsity({"sparsity": rows}, Path(ctx.workdir) / "layer_sparsity.png")
    return metrics
