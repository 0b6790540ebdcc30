"""Randomized-smoothing certification throughput and peak memory.

Ours (`Smooth.certify`: selection + estimation samples, batched, counts on the host) against the
plain batched loop a user would write (the same n0 + n noise samples per image in batches of the
same size, argmax, bincount), on the same model and images, in one process. Methods alternate
round by round and each keeps its fastest round. Then the peak memory of one CERTIFY at
n = 100,000 (tracemalloc on the CPU, torch.cuda.max_memory_allocated on a GPU): it must stay at
one batch, independent of n.

    python benchmarks/bench_certify.py --data-root ../shared/data --threads 1
    python benchmarks/bench_certify.py --data-root ../shared/data --device cuda --batch 4000

The model is a cnn8 trained for one epoch on 2,000 Fashion-MNIST images (throughput does not
depend on the weights; --checkpoint takes another model).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import torch

from robustcompress.certification.smoothing import Smooth
from robustcompress.data import load_dataset
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit


@torch.no_grad()
def plain_certify_counts(model, x, n0, n, sigma, batch, generator):
    """The hand-written loop: n0 then n noisy copies of each image, batch by batch, class counts."""
    out = []
    for img in x:
        for num in (n0, n):
            counts = None
            left = num
            while left:
                b = min(batch, left)
                noisy = img.expand(b, *img.shape) + sigma * torch.randn(
                    (b, *img.shape), generator=generator, device=generator.device
                )
                logits = model(noisy)
                c = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
                counts = c if counts is None else counts + c
                left -= b
            out.append(counts.cpu())
    return out


class RssPeak:
    """Peak growth of the resident set while the block runs (sampled every 2 ms from /proc):
    tracemalloc alone misses torch's CPU tensors."""

    def __enter__(self):
        import threading

        self.base = self.peak_rss = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak_rss, self._rss()) - self.base

    @staticmethod
    def _rss() -> int:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak_rss = max(self.peak_rss, self._rss())


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--memory-n", type=int, default=100_000)
    p.add_argument("--verbose", action="store_true", help="Print every round.")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from robustcompress.device import resolve_device

    device = resolve_device(a.device)
    splits = load_dataset(
        "fashion-mnist", root=a.data_root, limit_train=2200, val_fraction=200 / 2200, limit_test=100
    )
    if a.checkpoint:
        from robustcompress.checkpoint import load_checkpoint

        model = load_checkpoint(a.checkpoint)[0]
    else:
        torch.manual_seed(0)
        model = ModelSpec.for_data("cnn8", splits.info).build()
        fit(
            model, splits, TrainConfig(epochs=1, batch_size=64, lr=0.05), device="cpu", seed=0, progress=False
        )
    model.eval().to(device)
    x = splits.test.x[: a.images].to(device)
    samples = a.images * (a.n0 + a.n)
    print(
        f"device {device}, threads {a.threads}, {a.images} images x (n0 {a.n0} + n {a.n}) = {samples} "
        f"samples, batch {a.batch}, sigma {a.sigma}"
    )

    smooth = Smooth(model, a.sigma, batch_size=a.batch)
    best = {"ours": float("inf"), "plain": float("inf")}
    for r in range(a.rounds):
        for name in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            g = torch.Generator(device=device).manual_seed(r)
            sync(device)
            t = time.perf_counter()
            if name == "ours":
                smooth.certify(x, a.n0, a.n, 0.001, g)
            else:
                plain_certify_counts(model, x, a.n0, a.n, a.sigma, a.batch, g)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t)
            if a.verbose:
                print(f"round {r} {name} {time.perf_counter() - t:.3f} s")
    for name, sec in best.items():
        print(f"{name:6s} {samples / sec:12,.0f} noise samples/s  ({sec:.3f} s)")
    print(f"ratio ours / plain: {best['plain'] / best['ours']:.3f}x (goal >= 0.95x)")

    g = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        cert = smooth.certify(x[:1], a.n0, a.memory_n, 0.001, g)[0]
        sync(device)
        peak = torch.cuda.max_memory_allocated() - base
        where = "GPU (torch.cuda.max_memory_allocated)"
    else:
        tracemalloc.start()
        with RssPeak() as rss:
            t = time.perf_counter()
            cert = smooth.certify(x[:1], a.n0, a.memory_n, 0.001, g)[0]
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peak = rss.peak
        where = f"host (resident set growth; tracemalloc's Python peak {traced / 2**20:.2f} MiB)"
    batch_bytes = a.batch * x[0].numel() * 4
    print(
        f"one CERTIFY at n = {a.memory_n:,}: {time.perf_counter() - t:.1f} s, peak {peak / 2**20:.2f} MiB "
        f"on the {where}; one noise batch is {batch_bytes / 2**20:.2f} MiB; radius {cert.radius:.3f}"
    )


if __name__ == "__main__":
    main()
