"""Accuracy of pruned cnn8 on Fashion-MNIST: paper 003's L1 channel sweep and paper 002's Fig. 1/2.

1. Trains cnn8 once (cached in --cache) on --train images for --epochs epochs.
2. Structured L1 filter pruning at 0.1 .. 0.9 (paper 003, Fig. 3 / Table 3): test accuracy of the
   hardened model without fine-tuning, and after --ft-epochs epoch(s) of standard fine-tuning
   (cross-entropy, SGD) on --ft-train images.
3. Global against layer-wise unstructured magnitude pruning at 50/80/90/95% without fine-tuning
   (paper 002, Fig. 1), and the per-layer sparsity of both at 80% (paper 002, Fig. 2).

Run: .venv/bin/python benchmarks/bench_pruning_accuracy.py --data-root ../shared/data
Plots go to docs/img/pruning_*.png.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.compression.pruning import harden, prune_channels, prune_unstructured
from robustcompress.data import load_dataset
from robustcompress.evaluation import accuracy
from robustcompress.evaluation.efficiency import (
    count_params,
    layer_sparsity,
    plot_layer_sparsity,
    sparsity_table,
)
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit

SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
UNSTRUCTURED = [0.5, 0.8, 0.9, 0.95]


def baseline(args, splits):
    if args.baseline:
        model, _ = load_checkpoint(args.baseline)
        return model
    cache = Path(args.cache) / f"cnn8_fmnist_{args.train}_{args.epochs}ep"
    if (cache / "model.safetensors").exists():
        model, _ = load_checkpoint(cache)
        return model
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn8", splits.info).build()
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05, schedule="cosine")
    t0 = time.time()
    fit(model, splits, cfg, device="cpu", seed=0, progress=False)
    print(f"trained cnn8 in {time.time() - t0:.0f}s", flush=True)
    save_checkpoint(cache, model, {"data": {"dataset": "fashion-mnist", "limit_train": args.train}})
    return model


def plot(xs, series: dict[str, list[float]], path: Path, xlabel: str, title: str, reference=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, ys in series.items():
        ax.plot(xs, [100 * y for y in ys], marker="o", label=label)
    if reference:
        for label, (x, y) in reference.items():
            ax.plot([x], [y], marker="*", markersize=12, linestyle="none", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--train", type=int, default=12000, help="training images for the baseline")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ft-train", type=int, default=6000, help="images per fine-tuning epoch")
    ap.add_argument("--ft-epochs", type=int, default=1)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/robustcompress_bench_cache")
    ap.add_argument("--img", default="docs/img")
    ap.add_argument("--baseline", default=None, help="cnn8 checkpoint to start from (no training)")
    ap.add_argument("--sweep", default=",".join(map(str, SWEEP)), help="comma-separated channel sparsities")
    ap.add_argument("--skip-unstructured", action="store_true")
    args = ap.parse_args()
    sweep = [float(a) for a in args.sweep.split(",")]
    torch.set_num_threads(args.threads)
    n = args.train + 1000
    splits = load_dataset(
        "fashion-mnist",
        root=args.data_root,
        limit_train=n,
        val_fraction=1000 / n,
        limit_test=args.test,
        seed=0,
    )
    ft_splits = copy.copy(splits)
    ft_splits.train = splits.train.subset(torch.arange(min(args.ft_train, len(splits.train))))
    model = baseline(args, splits)
    base_acc = accuracy(model, splits.test)
    params = count_params(model)[0]
    print(f"baseline cnn8: {params:,} params, test acc {base_acc:.4f} ({len(splits.test)} test images)")
    img = Path(args.img)
    example = splits.test.x[:1]

    rows = ["| channel sparsity | params | acc no FT | acc after FT |", "|---:|---:|---:|---:|"]
    no_ft, ft = [], []
    for amount in sweep:
        pruned = copy.deepcopy(model)
        prune_channels(pruned, amount, importance="l1", example_input=example)
        harden(pruned, example_input=example)
        acc0 = accuracy(pruned, splits.test)
        cfg = TrainConfig(
            epochs=args.ft_epochs, batch_size=128, lr=0.02, schedule="cosine", restore_best=False
        )
        fit(pruned, ft_splits, cfg, device="cpu", seed=1, progress=False)
        acc1 = accuracy(pruned, splits.test)
        no_ft.append(acc0)
        ft.append(acc1)
        rows.append(f"| {amount:.1f} | {count_params(pruned)[0]:,} | {100 * acc0:.2f} | {100 * acc1:.2f} |")
        print(rows[-1], flush=True)
    print("\n" + "\n".join(rows))
    series = {"L1 channel pruning, no fine-tuning": no_ft, f"after {args.ft_epochs} epoch standard FT": ft}
    paper = {"paper 003 Table 3, no FT": (0.8, 33.21), "paper 003 Table 3, standard FT": (0.8, 88.94)}
    title = "cnn8 on Fashion-MNIST (paper 003 sweep)"
    plot(sweep, series, img / "pruning_fmnist_sweep.png", "channel sparsity", title, reference=paper)

    if args.skip_unstructured:
        return
    rows = ["| sparsity | global | layer-wise |", "|---:|---:|---:|"]
    curves: dict[str, list[float]] = {"global": [], "layer-wise": []}
    per_layer = {}
    for amount in UNSTRUCTURED:
        for method, label in (("global", "global"), ("layerwise", "layer-wise")):
            pruned = copy.deepcopy(model)
            prune_unstructured(pruned, amount, method)
            curves[label].append(accuracy(pruned, splits.test))
            if amount == 0.8:
                per_layer[label] = layer_sparsity(pruned)
        rows.append(
            f"| {amount:.2f} | {100 * curves['global'][-1]:.2f} | {100 * curves['layer-wise'][-1]:.2f} |"
        )
    print("\n" + "\n".join(rows))
    plot(UNSTRUCTURED, curves, img / "pruning_global_vs_layerwise.png", "sparsity",
         "Unstructured pruning of cnn8, no fine-tuning (paper 002 Fig. 1)")  # fmt: skip
    print("\nper-layer sparsity at 80%:\n" + sparsity_table(per_layer))
    plot_layer_sparsity(
        per_layer, img / "pruning_layer_sparsity.png", "Sparsity by layer at 80% (paper 002 Fig. 2)"
    )


if __name__ == "__main__":
    main()
