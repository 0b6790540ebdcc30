"""Latency on a loaded machine: each model timed on its own (as an experiment used to) against the
models timed interleaved round by round (evaluation/latency.py, the study's latency phase).

    PYTHONPATH=src python benchmarks/bench_latency.py [--trials 6] [--competitors 2]

Two models of known relative cost: cnn8 at width 1 and at width 0.7 (a 30% channel pruning; about
2x fewer MACs), CIFAR-10 inputs at batch 32, one torch thread. Each trial times them both ways while
a CPU-bound neighbour (`--competitors` busy-loop processes) starts halfway:
- one after another: the first model's median over `--rounds` passes, then the neighbour starts,
  then the second model's; the order alternates between trials, so the neighbour falls once on
  each model, as it does on whichever experiment happens to run beside it;
- interleaved: both models in one `measure_interleaved` call, the neighbour started after half of
  the rounds (a timer), so it falls on both alike.
A trial's figure is the wide model's time over the slim one's (> 1 is the right ranking). The
reference is the same ratio measured interleaved with no neighbour of ours before the trials.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

import torch

from robustcompress.evaluation.efficiency import measure_latency
from robustcompress.evaluation.latency import measure_interleaved
from robustcompress.measure import count_macs
from robustcompress.models import build_model

SHAPE = (3, 32, 32)  # CIFAR-10 images


class Neighbour:
    """`n` busy-loop processes: a CPU-bound load that starts and stops on demand."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


def one_after_another(models: dict, first: str, second: str, neighbour: Neighbour, args) -> float:
    """Ratio wide/slim when each is timed on its own and the neighbour starts between the two."""
    times = {first: measure_latency(models[first], SHAPE, args.batch, args.rounds, args.warmup, threads=1)}
    neighbour.start()
    try:
        times[second] = measure_latency(
            models[second], SHAPE, args.batch, args.rounds, args.warmup, threads=1
        )
    finally:
        neighbour.stop()
    return times["wide"] / times["slim"]


def interleaved(models: dict, x: torch.Tensor, neighbour: Neighbour | None, args):
    """Stats of the wide model against the slim one, timed interleaved; the neighbour starts halfway."""
    timer = None
    if neighbour is not None:
        per_round = sum(measure_latency(m, SHAPE, args.batch, 3, 1, threads=1) for m in models.values())
        timer = threading.Timer(per_round / 1000 * args.rounds / 2, neighbour.start)
        timer.start()
    try:
        stats = measure_interleaved(models, x, rounds=args.rounds, warmup=args.warmup, reference="slim")
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
            neighbour.stop()
    return stats["wide"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--competitors", type=int, default=3, help="busy-loop processes of the neighbour")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    models = {"wide": build_model("cnn8", width=1.0).eval(), "slim": build_model("cnn8", width=0.7).eval()}
    x = torch.rand(args.batch, *SHAPE, generator=torch.Generator().manual_seed(0))
    macs = {k: count_macs(m, x[:1])[0] for k, m in models.items()}
    quiet = interleaved(models, x, None, args)
    print(f"MAC ratio wide/slim {macs['wide'] / macs['slim']:.2f}; interleaved, no neighbour of ours: ")
    print(f"  wide {quiet.median_ms:.1f} ms, ratio {quiet.ratio:.2f} (IQR {quiet.ratio_quartiles[0]:.2f}-"
          f"{quiet.ratio_quartiles[1]:.2f}), rankable {quiet.rankable}")  # fmt: skip

    neighbour = Neighbour(args.competitors)
    alone, paired = [], []
    print("\n| trial | one after another: loaded model | ratio | interleaved: ratio (IQR) | flag |")
    print("|---:|---|---:|---:|---|")
    for t in range(args.trials):
        first, second = ("wide", "slim") if t % 2 == 0 else ("slim", "wide")
        alone.append(one_after_another(models, first, second, neighbour, args))
        s = interleaved(models, x, neighbour, args)
        paired.append(s.ratio)
        lo, hi = s.ratio_quartiles
        flag = "" if s.rankable else "not rankable"
        print(f"| {t} | {second} | {alone[-1]:.2f} | {s.ratio:.2f} ({lo:.2f}-{hi:.2f}) | {flag} |")
        time.sleep(0.5)  # let the killed neighbour's cores settle

    def summary(name: str, ratios: list[float]) -> None:
        wrong = sum(r <= 1 for r in ratios)
        print(
            f"{name}: ratio median {statistics.median(ratios):.2f}, "
            f"range {min(ratios):.2f}-{max(ratios):.2f}, wrong ranking in {wrong}/{len(ratios)} trials"
        )

    print()
    summary("one after another", alone)
    summary("interleaved      ", paired)


if __name__ == "__main__":
    main()
