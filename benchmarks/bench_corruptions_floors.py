"""What stops the slowest corruptions short of 10x the per-image code: the cost of their floors.

    python benchmarks/bench_corruptions_floors.py --data-root ../shared/data --threads 1

For each corruption: our time (corrupt_quantized, as the suite runs it), the per-image yardstick
(benchmarks/reference_corruptions.py on --ref-n images), and the one step our version cannot do
without (the random draws, the two matrix products of a separable filter, the JPEG codec), timed
alone on the same 128-image sub-blocks the code uses. "bound" is per-image / floor: the speed-up
even a corruption that did nothing but its floor would reach. All in ms per 1,000 CIFAR-10 images
and severity (mean over the 5 severities; best of --repeats for ours and the floors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_corruptions as ref  # noqa: E402
from robustcompress.corruptions import SUITES, _jpeg, _ops, corrupt_quantized  # noqa: E402

SUB = 128  # images per sub-block, as corrupt_quantized runs 32x32 images on the CPU


def per_block(x: torch.Tensor, step) -> None:
    for i in range(0, len(x), SUB):
        step(x[i : i + SUB])


def matmuls(a: torch.Tensor):
    """The two 32x32 operator products of a separable filter: W pass, then H pass (broadcast)."""
    return lambda b: a @ (b @ a.T)


def floors(x: torch.Tensor, severity: int) -> dict[str, tuple[str, callable]]:
    g = torch.Generator().manual_seed(0)
    blur = _ops.operator(
        _ops._gaussian_operator(32, [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1], "nearest", 4.0), x
    )
    scale = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    box = _ops.operator(_ops.box_round_trip_matrix(32, int(32 * scale)), x)
    u8 = (x * 255).round().to(torch.uint8)
    quality = [80, 65, 58, 50, 40][severity - 1]
    return {
        "gaussian_noise": ("randn float32", lambda b: torch.randn(b.shape, generator=g)),
        "speckle_noise": ("randn float32", lambda b: torch.randn(b.shape, generator=g)),
        "impulse_noise": ("rand float32", lambda b: torch.rand(b.shape, generator=g)),
        "shot_noise": ("rand float64", lambda b: torch.rand(b.shape, generator=g, dtype=torch.float64)),
        "gaussian_blur": ("two 32x32 matrix products", matmuls(blur)),
        "pixelate": ("two 32x32 matrix products", matmuls(box)),
        "jpeg_compression": (
            "the JPEG codec on uint8",
            lambda b: _jpeg.jpeg_round_trip(u8[: len(b)], quality),
        ),
        "spatter": ("randn (N, 1, H, W)", lambda b: torch.randn((len(b), 1, 32, 32), generator=g)),
    }


def best_of(repeats: int, fn, *args) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--ref-n", type=int, default=100, help="images per severity for the per-image code")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--corruptions", default=None, help="comma-separated subset")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = np.load(Path(args.data_root) / "cifar10" / "cifar10_exact_subset.npz")["x_test"][:1000]
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
    names = args.corruptions.split(",") if args.corruptions else list(floors(x, 1))
    suite = SUITES.get("cifar-c")
    scale = 1000 / args.ref_n
    quantize = best_of(
        args.repeats, lambda: per_block(x, lambda b: _ops.quantize_uint8(b.clone(), in_place=True))
    )
    clone = best_of(args.repeats, lambda: per_block(x, lambda b: b.clone()))
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; 1,000 images, per-image code on {args.ref_n}")
    print(f"quantize_uint8 in place alone: {1e3 * (quantize - clone):.1f} ms per 1,000 images\n")
    print("| corruption | ours ms | per-image ms | speed-up | floor | floor ms | bound |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for name in names:
        ours, theirs, floor = [], [], []
        for sev in suite.severities:
            label, step = floors(x, sev)[name]
            ours.append(best_of(args.repeats, corrupt_quantized, x, name, sev))
            theirs.append(best_of(1, ref.apply, name, images[: args.ref_n], sev) * scale)
            floor.append(best_of(args.repeats, per_block, x, step))
        o, t, f = (1e3 * float(np.mean(v)) for v in (ours, theirs, floor))
        print(f"| {name} | {o:.1f} | {t:.1f} | {t / o:.1f}x | {label} | {f:.1f} | {t / f:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
