"""Structured 50% channel pruning: MACs and measured CPU latency, ours against Torch-Pruning.

For each model (CIFAR inputs, 3x32x32, 10 classes, width 1) this builds the dense model, our
channel-pruned model before hardening (masked), our hardened models (round_to 1 and 8) and
Torch-Pruning's (GroupMagnitudeImportance, BasePruner, pruning_ratio 0.5, classifier ignored) in
the same process, then times forward passes on the CPU under torch.inference_mode. Timing is
interleaved (one pass of each variant per round, the order rotated every round) so that load from
other processes hits all variants alike; the figure is the median per variant.

    speed-up   = median over rounds of (dense time / pruned time), paired within a round
    efficiency = speed-up / (dense MACs / pruned MACs)

1.0 means the measured speed-up equals the MAC reduction. "time / Torch-Pruning's" is the paired
median of (variant time / Torch-Pruning time): below 1 is faster than Torch-Pruning.

Run: .venv/bin/python benchmarks/bench_pruning_channels.py [--models resnet18 vgg16 mobilenetv2]
     [--rounds 21] [--rounds-b1 100] [--threads 1] [--round-to 1 8] [--runtime eager|torchscript|onnxruntime]
Torch-Pruning is not a project dependency: `pip install torch-pruning` in your venv first.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from robustcompress.compression.pruning import harden, prune_channels
from robustcompress.evaluation.efficiency import count_macs, count_params, deployed
from robustcompress.models import build_model


def torch_pruning_variant(model, example):
    import torch_pruning as tp

    model = copy.deepcopy(model)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.BasePruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[last],
    )  # fmt: skip
    pruner.step()
    return model


def ours_variant(model, example, round_to: int, hardened: bool = True):
    model = copy.deepcopy(model)
    prune_channels(model, 0.5, importance="l1", round_to=round_to, example_input=example)
    return harden(model, example_input=example) if hardened else model


def interleaved_latency(variants: dict, batch: int, rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Milliseconds of every round for every variant."""
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for m in variants.values():
            for _ in range(warmup):
                m(x)
        names = list(variants)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no position bias
                t0 = time.perf_counter()
                variants[name](x)
                times[name].append(time.perf_counter() - t0)
    return {k: [1000 * t for t in v] for k, v in times.items()}


def paired(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r]: load that drifts between rounds cancels."""
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vgg16", "mobilenetv2"])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--rounds-b1", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 8])
    ap.add_argument(
        "--runtime",
        default="eager",
        choices=["eager", "torchscript", "onnxruntime"],
        help="run every variant in eager PyTorch, frozen TorchScript or fp32 ONNX Runtime",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    example = torch.rand(1, 3, 32, 32)
    threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, runtime {args.runtime}, "
        f"rounds b64 {args.rounds}, b1 {args.rounds_b1}"
    )
    header = (
        "| model | variant | params | MACs | MAC reduction | ms b64 | speed-up b64 | efficiency b64 "
        "| time / Torch-Pruning's b64 | ms b1 | speed-up b1 | efficiency b1 |"
    )
    rows = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.models:
        torch.manual_seed(0)
        dense = build_model(name, num_classes=10, in_channels=3, input_size=32).eval()
        variants = {
            "dense": dense,
            "masked, not hardened": ours_variant(dense, example, 1, hardened=False).eval(),
        }
        for r in args.round_to:
            variants[f"robustcompress round_to={r}"] = ours_variant(dense, example, r).eval()
        variants["Torch-Pruning 1.6"] = torch_pruning_variant(dense, example).eval()
        macs = {k: count_macs(m, example)[0] for k, m in variants.items()}
        for k, m in variants.items():  # every variant must still produce logits of the right shape
            assert m(example).shape == (1, 10), k
        batch = torch.rand(64, 3, 32, 32)
        runs = {k: deployed(m, args.runtime, batch, threads) for k, m in variants.items()}
        lat64 = interleaved_latency(runs, 64, args.rounds)
        lat1 = interleaved_latency(runs, 1, args.rounds_b1)
        tp = "Torch-Pruning 1.6"
        for k, m in variants.items():
            red = macs["dense"] / macs[k]
            s64, s1 = paired(lat64["dense"], lat64[k]), paired(lat1["dense"], lat1[k])
            ms64, ms1 = statistics.median(lat64[k]), statistics.median(lat1[k])
            rows.append(
                f"| {name} | {k} | {count_params(m)[0] / 1e6:.2f}M | {macs[k] / 1e6:.1f}M | {red:.2f}x "
                f"| {ms64:.1f} | {s64:.2f}x | {s64 / red:.2f} | {paired(lat64[k], lat64[tp]):.3f} "
                f"| {ms1:.2f} | {s1:.2f}x | {s1 / red:.2f} |"
            )
        print("\n".join(rows[-len(variants) :]), flush=True)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
