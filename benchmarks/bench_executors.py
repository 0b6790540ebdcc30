"""The same 4-recipe study with the local executor (one process) and on a local Ray instance, in one
invocation: wall times, their ratio, and Ray's overhead per task.

    PYTHONPATH=src python benchmarks/bench_executors.py --data-root ../shared/data

Runs, each into a fresh output folder: local; Ray with 1 worker; Ray with 2 workers. The overhead
per task (scheduling, a worker loading its data and the parent checkpoint, saving its artifact, the
metrics' round trip) is (Ray with 1 worker - local) / tasks: the same work, one task at a time.
The Ray instance's start-up is timed apart (a cluster starts once for many studies).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from robustcompress.experiments.config import ExecutionConfig, ExperimentConfig
from robustcompress.experiments.executors import LocalExecutor, RayExecutor, start_local
from robustcompress.experiments.graph import build_graph
from robustcompress.experiments.runner import run_experiments

RECIPES = [
    {"name": "plain", "stages": []},
    {"name": "pruned", "stages": [{"type": "prune", "amount": 0.5, "epochs": 0}]},
    {
        "name": "pruned-tuned",
        "stages": [{"type": "prune", "amount": 0.5, "epochs": 0}, {"type": "finetune", "epochs": 1}],
    },
    {"name": "tuned", "stages": [{"type": "finetune", "epochs": 1}]},
]


def study(root: str, out: Path, n_train: int) -> ExperimentConfig:
    return ExperimentConfig.parse(
        {
            "name": "bench",
            "output": str(out),
            "data": {"dataset": "fashion-mnist", "root": root, "limit_train": n_train, "limit_test": 1000},
            "model": {"name": "cnn8", "width": 0.5},
            "train": {"epochs": 1, "batch_size": 64},
            "evaluations": [{"type": "clean"}],
            "recipes": RECIPES,
        }
    )


def timed(cfg: ExperimentConfig, executor) -> float:
    start = time.perf_counter()
    run_experiments(cfg, progress=False, log=lambda m: None, executor=executor)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--n-train", type=int, default=3000)
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)  # the local executor at one thread, like each Ray task (cpus = 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tasks = build_graph(study(args.data_root, tmp / "x", args.n_train)).shape()["tasks"]
        local = timed(study(args.data_root, tmp / "local", args.n_train), LocalExecutor(lambda m: None))
        start = time.perf_counter()
        start_local(num_cpus=2)
        startup = time.perf_counter() - start
        try:
            one = RayExecutor(ExecutionConfig(executor="ray", workers=1, cpus=1), lambda m: None)
            ray1 = timed(study(args.data_root, tmp / "ray1", args.n_train), one)
            two = RayExecutor(ExecutionConfig(executor="ray", workers=2, cpus=1), lambda m: None)
            ray2 = timed(study(args.data_root, tmp / "ray2", args.n_train), two)
        finally:
            ray.shutdown()
    print(
        f"study: {len(RECIPES)} recipes, {tasks} tasks "
        f"(cnn8 x0.5, {args.n_train} Fashion-MNIST images, 1 epoch)"
    )
    print(f"local executor, one process:  {local:7.1f} s")
    print(f"ray, 1 worker:                {ray1:7.1f} s")
    print(f"ray, 2 workers:               {ray2:7.1f} s   local / ray(2) = {local / ray2:.2f}x")
    print(f"ray start-up (once):          {startup:7.1f} s")
    print(
        f"ray overhead per task:        {(ray1 - local) / tasks:7.2f} s   "
        "((ray(1) - local) / tasks; goal < 5 s)"
    )


if __name__ == "__main__":
    main()
