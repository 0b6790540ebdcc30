"""Quantization / clustering benchmarks on Fashion-MNIST cnn8 and resnet18 latency.

1. Paper 003's PTQ sweep (INT16 .. INT1, symmetric per-channel weights, asymmetric activations).
2. Paper 000's 16 configurations (a CPU budget: 1 fine-tuning epoch per stage), accuracy and
   rcz-file compression ratio against the fp32 checkpoint, in one table.
3. Real int8 (ONNX Runtime) vs fp32 PyTorch latency at batch 64 on resnet18 (CIFAR input).
4. Huffman vs zstd on the streams of a PCQAT file; pictures (weight histograms, accuracy vs bits).

Usage: python benchmarks/bench_quant.py --data-root ../shared/data [--train 4000] [--epochs 3]
Prints markdown tables; writes PNGs to --figures.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import robustcompress.compression  # noqa: F401
from robustcompress.compression.format import read_header, save_compressed
from robustcompress.compression.format.codec import encode_symbols, huffman_encode
from robustcompress.compression.presets import PAPER000, preset_stages
from robustcompress.data import load_dataset
from robustcompress.evaluation import accuracy
from robustcompress.evaluation.size import checkpoint_bytes
from robustcompress.models import ModelSpec
from robustcompress.plugins import load_plugins
from robustcompress.stages import STAGES, StageContext
from robustcompress.training import TrainConfig, fit


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def global_magnitude_prune(model: nn.Module, cfg, ctx) -> nn.Module:
    """Stand-in for the pruning stage (when it is not installed): global magnitude masks as
    parametrizations on `weight`, the pruning stage's convention."""
    from torch.nn.utils import parametrize

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    scores = torch.cat([m.weight.detach().abs().flatten() for m in layers])
    threshold = scores.kthvalue(int(cfg["amount"] * len(scores))).values
    for m in layers:
        parametrize.register_parametrization(
            m, "weight", _Mask((m.weight.detach().abs() > threshold).float())
        )
    return model


def apply(model: nn.Module, stage: dict, ctx: StageContext) -> nn.Module:
    stage = dict(stage)
    kind = stage.pop("type")
    if kind == "prune" and "prune" not in STAGES:
        return global_magnitude_prune(model, stage, ctx)
    spec = STAGES.get(kind)
    return spec.apply(model, spec.config_cls.parse(stage), ctx)


def file_ratio(model: nn.Module, dense: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        size = save_compressed(model, Path(tmp) / "m.rcz")
    return size, dense / size


def main() -> None:
    load_plugins()  # the pruning area's `prune` stage when installed (else the stand-in above)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3, help="baseline training epochs")
    ap.add_argument("--ft-epochs", type=int, default=1, help="fine-tuning epochs per stage")
    ap.add_argument("--ft-train", type=int, default=2000, help="training images used by fine-tuning")
    ap.add_argument(
        "--amount", type=float, default=0.8, help="pruning fraction (paper 003: 0.8 on Fashion-MNIST)"
    )
    ap.add_argument("--figures", default="docs/img")
    ap.add_argument(
        "--baseline", default=None, help="checkpoint folder: reuse the baseline if there, else save it"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["ptq", "paper000", "latency"])
    ap.add_argument(
        "--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: torch's)"
    )
    ap.add_argument("--rounds", type=int, default=9, help="latency rounds")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "latency" not in args.skip:
        bench_latency(args.rounds)
    if "ptq" in args.skip and "paper000" in args.skip:
        return
    torch.manual_seed(0)
    splits = load_dataset(
        "fashion-mnist",
        root=args.data_root,
        limit_train=args.train + args.train // 10,
        val_fraction=1 / 11,
        limit_test=args.test,
        seed=0,
    )
    spec = ModelSpec.for_data("cnn8", splits.info)
    model = spec.build()
    t0 = time.time()
    fit(
        model,
        splits,
        TrainConfig(epochs=args.epochs, batch_size=64, lr=0.05),
        device="cpu",
        seed=0,
        progress=False,
    )
    model.eval()
    base_acc = accuracy(model, splits.test)
    dense = len(checkpoint_bytes(model))
    print(
        f"baseline cnn8: {args.train} train images, {args.epochs} epochs ({time.time() - t0:.0f}s), "
        f"test acc {base_acc:.4f} on {args.test}, fp32 checkpoint {dense} bytes\n"
    )
    ft_splits = dataclasses.replace(splits, train=splits.train.subset(range(args.ft_train)))
    ctx = StageContext(
        data=ft_splits, device=torch.device("cpu"), seed=0, train=TrainConfig(batch_size=64), progress=False
    )
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)

    if "ptq" not in args.skip:
        print("## PTQ sweep (paper 003), cnn8 Fashion-MNIST\n")
        print("| weights / activations | acc | delta vs fp32 | rcz bytes | ratio |\n|---|---|---|---|---|")
        fp32_file, fp32_ratio = file_ratio(model, dense)
        print(f"| fp32 | {base_acc:.4f} | 0 | {fp32_file} | {fp32_ratio:.2f} |")
        sweep = []
        for bits in (16, 8, 4, 2, 1):
            q = apply(copy.deepcopy(model), {"type": "ptq", "bits": bits}, ctx)
            acc = accuracy(q, splits.test)
            size, ratio = file_ratio(q, dense)
            sweep.append((bits, acc))
            print(f"| INT{bits} | {acc:.4f} | {100 * (acc - base_acc):+.2f} | {size} | {ratio:.2f} |")
        sim8 = apply(copy.deepcopy(model), {"type": "ptq", "bits": 8}, ctx)
        real8 = apply(copy.deepcopy(model), {"type": "int8"}, ctx)
        a_sim, a_real = accuracy(sim8, splits.test), accuracy(real8, splits.test)
        with torch.no_grad():
            agree = (sim8(splits.test.x).argmax(1) == real8(splits.test.x).argmax(1)).float().mean().item()
        print(
            f"\nsimulated int8 {a_sim:.4f}, ONNX Runtime int8 {a_real:.4f}: "
            f"{100 * abs(a_sim - a_real):.2f} points apart, predictions agree on {100 * agree:.1f}%\n"
        )
        plot_bits(sweep, base_acc, figures / "quant_acc_vs_bits.png")
        plot_histograms(model, ctx, figures / "quant_weight_histograms.png")

    if "paper000" not in args.skip:
        print(
            f"## Paper 000's 16 configurations, cnn8 Fashion-MNIST (prune {args.amount:.0%}, 16 clusters, "
            f"8-bit QAT, {args.ft_epochs} fine-tuning epoch(s) per stage on {args.ft_train} images)\n"
        )
        print("| # | preset | acc | delta | file | bytes | ratio |\n|---|---|---|---|---|---|---|")
        cache: dict[tuple, nn.Module] = {}

        def run(stages: list[dict]) -> nn.Module:
            key: tuple = ()
            current = model
            for stage in stages:
                key = key + (repr(sorted(stage.items())),)
                if key not in cache:
                    cache[key] = apply(copy.deepcopy(current), stage, ctx)
                current = cache[key]
            return current

        for i, name in enumerate(PAPER000, 1):
            t = time.time()
            out = run(preset_stages(name, epochs=args.ft_epochs, amount=args.amount))
            acc = accuracy(out, splits.test)
            size, ratio = file_ratio(out, dense)
            kind = "int8 rcz" if type(out).__name__ == "Int8Model" else "rcz"
            print(
                f"| {i} | {name} | {acc:.4f} | {100 * (acc - base_acc):+.2f} | {kind} | {size} |"
                f" {ratio:.2f} | <!-- {time.time() - t:.0f}s -->"
            )
            if name == "pcqat":
                codec_report(out)


def bench_latency(rounds: int = 9) -> None:
    """Real int8 (ONNX Runtime) vs fp32 (PyTorch eager and ONNX Runtime) on resnet18, batch 64.

    The three run in the same process, one batch each per round in a rotated order; the speed-up is
    the median over rounds of fp32 PyTorch time / variant time (weights do not change speed).
    """
    from robustcompress.compression.quantization.int8 import export_onnx, ort_session, to_int8

    print("\n## Real int8 latency, resnet18 (CIFAR 32x32), batch 64, CPU\n")
    net = ModelSpec(name="resnet18", num_classes=10, in_channels=3, input_size=32).build().eval()
    x = torch.rand(64, 3, 32, 32)
    q = to_int8(net, torch.rand(256, 3, 32, 32))
    fp32_ort = ort_session(export_onnx(net, x[:2]))  # same threads as torch, no spinning workers
    xn = x.numpy()

    def torch_fp32():
        with torch.inference_mode():
            net(x)

    variants = {
        "fp32 PyTorch (eager)": torch_fp32,
        "fp32 ONNX Runtime": lambda: fp32_ort.run(None, {"x": xn}),
        "int8 ONNX Runtime": lambda: q(x),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds + 2):  # two warm-up rounds
        for name in names[r % 3 :] + names[: r % 3]:
            t = time.perf_counter()
            variants[name]()
            if r >= 2:
                times[name].append(time.perf_counter() - t)
    base = times[names[0]]
    print(f"torch threads {torch.get_num_threads()}, {rounds} rounds\n")
    print(
        "| model | ms / batch 64 (median) | speed-up (paired median) | speed-up (ratio of medians) |"
        "\n|---|---|---|---|"
    )
    for name in names:
        paired = statistics.median(b / t for b, t in zip(base, times[name]))
        medians = statistics.median(base) / statistics.median(times[name])
        print(f"| {name} | {statistics.median(times[name]) * 1000:.1f} | {paired:.2f} | {medians:.2f} |")
    print(
        f"\nint8 tensors by dtype (bytes): {q.weight_bytes()}; "
        f"fp32 checkpoint {len(checkpoint_bytes(net))} bytes; "
        f"int8 checkpoint {len(checkpoint_bytes(q))} bytes"
    )


def codec_report(model: nn.Module) -> None:
    """Which entropy coder won each stream of the rcz file, and Huffman vs zstd on the index streams."""
    with tempfile.TemporaryDirectory() as tmp:
        save_compressed(model, Path(tmp) / "m.rcz")
        header, _ = read_header(Path(tmp) / "m.rcz")
    won: dict[tuple[str, str], int] = {}
    for entry in header["tensors"]:
        for s in entry["streams"]:
            won[(s["kind"], s["codec"])] = won.get((s["kind"], s["codec"]), 0) + s["size"]
    print(f"\n  rcz streams of PCQAT (kind, winning codec) -> bytes: {won}")
    huff = zstd = packed = 0
    for m in model.modules():
        p = getattr(getattr(m, "parametrizations", None), "weight", None)
        if p is None:
            continue
        idx = p[0].index.flatten().numpy()
        sym = idx[idx > 0] - 1
        k = int(p.original.shape[1])
        meta, payload = encode_symbols(sym, k)
        h = huffman_encode(sym, k)
        huff += len(h) if h is not None else 10**12
        import math

        import zstandard

        from robustcompress.compression.format.codec import pack_bits

        bits = math.ceil(math.log2(k))
        raw = pack_bits(sym, bits)
        zstd += len(zstandard.ZstdCompressor(level=19).compress(raw))
        packed += len(raw)
    print(f"  cluster-index streams: packed {packed} B, zstd {zstd} B, Huffman {huff} B\n")


def plot_bits(sweep, base_acc, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits, accs = zip(*sweep)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(len(bits)), [100 * a for a in accs], "o-", label="PTQ (simulated)")
    ax.axhline(100 * base_acc, color="gray", ls="--", label="fp32")
    ax.set_xticks(range(len(bits)), [f"INT{b}" for b in bits])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("cnn8 Fashion-MNIST: accuracy vs bit width")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def plot_histograms(model: nn.Module, ctx, path: Path) -> None:
    """Paper 002, Figure 6: occurrences of weight values before and after clustering / quantization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = "net.features.4.0"
    variants = {
        "fp32": model,
        "clustered (16)": apply(copy.deepcopy(model), {"type": "cluster", "clusters": 16}, ctx),
        "PTQ INT4": apply(copy.deepcopy(model), {"type": "ptq", "bits": 4, "per_channel": False}, ctx),
    }
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharex=True)
    for ax, (label, m) in zip(axes, variants.items()):
        w = m.get_submodule(layer).weight.detach().flatten().numpy()
        ax.hist(w, bins=200, color="C0")
        ax.set_title(f"{label}: {len(np.unique(w))} distinct values")
        ax.set_xlabel(f"{layer}.weight")
    axes[0].set_ylabel("occurrences")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
