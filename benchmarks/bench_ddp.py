"""One training on 2 processes (torchrun, DistributedDataParallel) against 1 process.

    python benchmarks/bench_ddp.py --data-root ../shared/data [--device cuda --processes 2]

Trains cnn8 on Fashion-MNIST for --epochs epochs with the same global batch in both runs, one
thread per process on CPU (gloo), and prints the training throughput (images per second over all
ranks, validation excluded) and the speed-up. On a machine that other work keeps busy the
2-process figure measures the free cores, not DDP: the busy cores sampled before each run are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(a: argparse.Namespace) -> None:
    import torch

    from robustcompress.data import load_dataset
    from robustcompress.models import ModelSpec
    from robustcompress.training import TrainConfig, fit

    torch.set_num_threads(1)
    splits = load_dataset(
        "fashion-mnist", root=a.data_root, limit_train=a.images, val_fraction=0.0, limit_test=10, seed=0
    )
    model = ModelSpec.for_data("cnn8", splits.info).build(seed=0)
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, schedule="constant")
    result = fit(model, splits, cfg, device=a.device, progress=False)
    if os.environ.get("RANK", "0") == "0":
        rates = [row["images_per_s"] for row in result.history]
        print(json.dumps({"images_per_s": max(rates), "last_loss": result.history[-1]["train_loss"]}))


def launch(a: argparse.Namespace, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    args = [__file__, "--worker", "--data-root", a.data_root, "--images", str(a.images)]
    args += ["--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--device", a.device]
    command = [sys.executable, *args]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
        command += [f"--master-port={port}", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=2, help="the best epoch's rate is kept")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over the ranks)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a)
        return
    sys.path.insert(0, str(REPO / "src"))
    from robustcompress.threads import allowed_cpus, busy_cores

    cpus = allowed_cpus()
    print(f"cnn8, {a.images} Fashion-MNIST images, global batch {a.batch_size}, {a.device}, {len(cpus)} CPUs")
    print("| processes | busy cores before | train img/s (all ranks) | speed-up | last train loss | wall s |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = None
    for n in (1, a.processes):
        busy = busy_cores(cpus, 0.5)
        t0 = time.perf_counter()
        r = launch(a, n)
        wall = time.perf_counter() - t0
        base = base or r["images_per_s"]
        print(
            f"| {n} | {busy} | {r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f}x "
            f"| {r['last_loss']:.4f} | {wall:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
