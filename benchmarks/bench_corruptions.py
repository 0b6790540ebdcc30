"""Throughput of the batched corruptions against per-image NumPy/SciPy code, in one process.

    python benchmarks/bench_corruptions.py --data-root ../shared/data --n 10000 --ref-n 100

The 1,017 exact CIFAR-10 test images are tiled to --n images (the subset is all we have). The
batched suite corrupts all of them, every corruption at every severity, quantised to uint8 as
the evaluation does; the per-image reference (benchmarks/reference_corruptions.py) is timed on
the first --ref-n images per severity and its rate extrapolated. Frost in the reference style
resizes and crops a frost photo per image (here the first 1024x1024 procedural stand-in, held in memory).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_corruptions as ref  # noqa: E402
from robustcompress.corruptions import CHUNK, SUITES, corrupt_quantized  # noqa: E402
from robustcompress.corruptions.weather import frost_bank  # noqa: E402


def reference_frost_factory(seed: int):
    """Per-image frost in the reference's style: resize a frost photo by 0.2, crop 32x32, blend."""
    photo = frost_bank(1024)[0]
    photo = Image.fromarray((photo.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    rng = np.random.RandomState(seed)  # the legacy generator the reference used

    def run(images: np.ndarray, severity: int) -> np.ndarray:
        out = np.empty_like(images)
        for i, img in enumerate(images):
            small = np.asarray(photo.resize((photo.width // 5, photo.height // 5), Image.BILINEAR))
            top, left = rng.randint(0, small.shape[0] - 32), rng.randint(0, small.shape[1] - 32)
            out[i] = np.uint8(ref.frost(img, severity, rng, texture=small[top : top + 32, left : left + 32]))
        return out

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--n", type=int, default=10000, help="images for the batched suite (tiled)")
    p.add_argument("--ref-n", type=int, default=100, help="images per severity for the per-image reference")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--corruptions", default=None, help="comma-separated subset")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time both sides this many times, keep the best (busy machines)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = np.load(Path(args.data_root) / "cifar10" / "cifar10_exact_subset.npz")["x_test"]
    reps = -(-args.n // len(base))
    images = np.concatenate([base] * reps)[: args.n]
    # contiguous (N, C, H, W), as robustcompress.data loads images (ImageData.from_uint8)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
    suite = SUITES.get("cifar-c")
    names = args.corruptions.split(",") if args.corruptions else suite.names()
    ref_frost = reference_frost_factory(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.n} images (1,017 tiled), "
        f"reference on {args.ref_n} per severity"
    )
    print("| corruption | batched img/s | per-image img/s | speed-up | batched s (5 sev x n) |")
    print("|---|---:|---:|---:|---:|")
    suite_seconds = 0.0
    for name in names:
        ours = theirs = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for sev in suite.severities:
                for i in range(0, len(x), CHUNK):
                    corrupt_quantized(x[i : i + CHUNK], name, sev, start=i)
            ours = min(ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for sev in suite.severities:
                if name == "frost":
                    ref_frost(images[: args.ref_n], sev)
                else:
                    ref.apply(name, images[: args.ref_n], sev)
            theirs = min(theirs, time.perf_counter() - t0)
        ours_rate = 5 * len(x) / ours
        ref_rate = 5 * args.ref_n / theirs
        if name in suite.corruptions:
            suite_seconds += ours
        extra = "" if name in suite.corruptions else " (extra)"
        print(
            f"| {name}{extra} | {ours_rate:,.0f} | {ref_rate:,.0f} | {ours_rate / ref_rate:.0f}x "
            f"| {ours:.1f} |",
            flush=True,
        )
    bench = [n for n in names if n in suite.corruptions]
    print(
        f"\nbenchmark suite ({len(bench)} corruptions x 5 severities x {args.n} images): "
        f"{suite_seconds:.1f} s"
    )
    print(random_floor(x, CHUNK))


def random_floor(x: torch.Tensor, chunk: int) -> str:
    """Seconds torch takes only to draw one random number per value, 5 severities x all images.

    The noises draw one (shot noise: one float64) per value, so no batched noise can be faster.
    """
    g = torch.Generator().manual_seed(0)
    parts = []
    for label, draw in (
        ("randn float32", lambda s: torch.randn(s, generator=g)),
        ("rand float32", lambda s: torch.rand(s, generator=g)),
        ("rand float64", lambda s: torch.rand(s, generator=g, dtype=torch.float64)),
    ):
        t0 = time.perf_counter()
        for _ in range(5):
            for i in range(0, len(x), chunk):
                draw(x[i : i + chunk].shape)
        parts.append(f"{label} {time.perf_counter() - t0:.2f} s")
    return "random draws alone (5 x n images): " + ", ".join(parts)


if __name__ == "__main__":
    main()
