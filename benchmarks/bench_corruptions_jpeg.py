"""The torch JPEG round trip against Pillow's libjpeg: pixel agreement and speed, in one process.

    python benchmarks/bench_corruptions_jpeg.py --data-root ../shared/data --threads 1

For every quality of the CIFAR-10-C suite (and a few more), all 1,017 exact CIFAR-10 test images
(RGB, 4:2:0) and 1,000 Fashion-MNIST test images (grayscale) go through both codecs. Printed: the
largest and mean absolute difference in grey levels, the fraction of identical pixels, and the
time of each codec (Pillow encodes and decodes one image at a time, in one thread here).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

from robustcompress.corruptions.digital import jpeg_round_trip
from robustcompress.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--qualities", default="80,65,58,50,40,95,20,5")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    cifar = np.load(root / "cifar10" / "cifar10_exact_subset.npz")["x_test"]
    sets = {
        "CIFAR-10 RGB 32x32": torch.from_numpy(cifar).permute(0, 3, 1, 2).contiguous(),
        "Fashion-MNIST grey 28x28": torch.round(
            load_dataset("fashion-mnist", root=root, limit_test=1000).test.x * 255
        ).to(torch.uint8),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; Pillow with libjpeg-turbo "
        f"{features.version('libjpeg_turbo')}"
    )
    print("| images | quality | max abs diff | mean abs diff | identical pixels | torch s | Pillow s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, images in sets.items():
        for quality in (int(q) for q in args.qualities.split(",")):
            t0 = time.perf_counter()
            ours = jpeg_round_trip(images, quality, "torch")
            t1 = time.perf_counter()
            theirs = pillow_one_thread(images, quality)
            t2 = time.perf_counter()
            diff = (ours.int() - theirs.int()).abs()
            print(
                f"| {label} | {quality} | {diff.max().item()} | {diff.float().mean().item():.4f} "
                f"| {(diff == 0).float().mean().item():.2%} | {t1 - t0:.3f} | {t2 - t1:.3f} |",
                flush=True,
            )


def pillow_one_thread(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Pillow image by image in this thread, straight from NumPy (no torch work per image)."""
    arr = images.permute(0, 2, 3, 1).numpy()
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if mode == "L" else img, mode=mode).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(mode))
        out[i] = dec[..., None] if mode == "L" else dec
    return torch.from_numpy(out).permute(0, 3, 1, 2)


if __name__ == "__main__":
    main()
