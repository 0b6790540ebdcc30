"""Training throughput of robustcompress.training.fit against a plain PyTorch loop, same process.

Both run the same model architecture, optimizer, batches and number of steps; the rounds alternate
(trainer, plain, trainer, plain ...) so machine drift hits both alike. Prints images/s and the
overhead of the trainer (goal: under 5%).

    python benchmarks/bench_trainer.py --data-root ../shared/data --steps 40 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustcompress.data import load_dataset
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit


def plain_loop(model, train, cfg: TrainConfig, seed: int) -> float:
    """The loop a user would write by hand: same optimizer, same batches; returns images/s."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for i, (x, y) in enumerate(train.batches(cfg.batch_size, shuffle=True, generator=gen)):
        if i >= cfg.max_steps_per_epoch:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def trainer(model, splits, cfg: TrainConfig, seed: int) -> float:
    result = fit(model, splits, cfg, device="cpu", seed=seed, progress=False)
    return result.history[0]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--models", default="cnn8,resnet18")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.steps} steps per round, {args.rounds} rounds (median)"
    )
    print(f"{'model':<10} {'dataset':<14} {'trainer img/s':>14} {'plain img/s':>12} {'trainer/plain':>14}")
    for name in args.models.split(","):
        dataset = "fashion-mnist" if name == "cnn8" else "cifar10-subset"
        source = (
            "fashion-mnist" if name == "cnn8" else f"npz:{args.data_root}/cifar10/cifar10_exact_subset.npz"
        )
        splits = load_dataset(source, root=args.data_root, val_fraction=0.0, limit_test=1)
        cfg = TrainConfig(
            epochs=1, batch_size=args.batch_size, max_steps_per_epoch=args.steps, lr=0.01, schedule="constant"
        )
        ours, plain = [], []
        for r in range(args.rounds + 1):  # round 0 warms up both paths
            torch.manual_seed(r)
            a = ModelSpec.for_data(name, splits.info).build()
            torch.manual_seed(r)
            b = ModelSpec.for_data(name, splits.info).build()
            t_ours, t_plain = trainer(a, splits, cfg, r), plain_loop(b, splits.train, cfg, r)
            if r:
                ours.append(t_ours)
                plain.append(t_plain)
        o, p = statistics.median(ours), statistics.median(plain)
        print(f"{name:<10} {dataset:<14} {o:>14.1f} {p:>12.1f} {o / p:>14.3f}")


if __name__ == "__main__":
    main()
