"""Threads that fit the machine: the corruption suite through the CLI against its kernel, and train /
attack throughput per free core, on an idle machine and with one competing CPU-bound process.

    python benchmarks/bench_threads.py --data-root ../shared/data

Each figure runs in a fresh process, as a user's command does, so the automatic thread count
(robustcompress/threads.py) sees the load of that moment. "idle" means no process of this benchmark
competes; other users of the machine may still keep cores busy: the busy cores sampled before each
condition are printed. The goal (issue 16): with one competing process, the 15x5 suite through
`robustcompress corrupt` within 1.5x of the kernel, and train / attack keeping 80% of their idle
throughput per free core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
ENV.pop("OMP_NUM_THREADS", None)  # let the automatic default choose
ENV.pop("ROBUSTCOMPRESS_THREADS", None)

KERNEL = """
import json, sys, time, numpy as np, torch
from robustcompress.corruptions import CHUNK, SUITES, corrupt_quantized
torch.set_num_threads(1)
x = np.load(sys.argv[1])["x_test"]
x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 255
suite = SUITES.get("cifar-c")
t0 = time.perf_counter()
for name in suite.corruptions:
    for sev in suite.severities:
        for i in range(0, len(x), CHUNK):
            corrupt_quantized(x[i : i + CHUNK], name, sev, start=i)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

WORK = """
import json, sys, time, torch
from robustcompress.threads import configure_threads
from robustcompress.data import load_dataset
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit
from robustcompress.attacks import make_attack
threads = configure_threads()
splits = load_dataset("fashion-mnist", root=sys.argv[1], limit_train=2000, val_fraction=0.0, limit_test=200)
model = ModelSpec.for_data("cnn8", splits.info).build(seed=0)
cfg = TrainConfig(epochs=1, batch_size=64, schedule="constant")
result = fit(model, splits, cfg, device="cpu", progress=False)
train_rate = result.history[0]["images_per_s"]
attack = make_attack("pgd", model, 0.1, steps=10)
x, y = splits.test.x, splits.test.y
t0 = time.perf_counter()
attack(x, y)
print(json.dumps({"threads": threads, "train": train_rate, "attack": len(x) / (time.perf_counter() - t0)}))
"""

SPIN = "while True:\n    pass"


def run_json(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_seconds(npz: Path, suite_names: list[str], threads: int | None) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "robustcompress"]
        command += ["--threads", str(threads)] if threads else []
        command += [
            "corrupt",
            "--dataset",
            f"npz:{npz}",
            "--corruptions",
            ",".join(suite_names),
            "--out",
            out,
        ]
        t0 = time.perf_counter()
        subprocess.run(command, env=ENV, capture_output=True, check=True)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="../shared/data")
    a = p.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from robustcompress.corruptions import SUITES
    from robustcompress.threads import allowed_cpus, busy_cores

    npz = Path(a.data_root) / "cifar10" / "cifar10_exact_subset.npz"
    names = list(SUITES.get("cifar-c").corruptions)
    cpus = allowed_cpus()
    started = time.perf_counter()
    import_s = min(
        _timed([sys.executable, "-m", "robustcompress", "--threads", "1", "results", "--help"])
        for _ in range(2)
    )
    print(f"{len(cpus)} allowed CPUs; CLI start-up (import, no work): {import_s:.1f} s")
    rows = {}
    for condition in ("idle", "loaded"):
        spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if condition == "loaded" else None
        try:
            time.sleep(0.5)
            busy = busy_cores(cpus, 0.5)
            kernel = run_json(["-c", KERNEL, str(npz)])["seconds"]
            cli_auto = cli_seconds(npz, names, None)
            cli_two = cli_seconds(npz, names, len(cpus)) if len(cpus) > 1 else float("nan")
            work = run_json(["-c", WORK, a.data_root])
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        free = max(1, len(cpus) - (1 if condition == "loaded" else 0))
        rows[condition] = {
            "busy": busy,
            "kernel": kernel,
            "cli": cli_auto,
            "cli_all": cli_two,
            "free": free,
            **work,
        }
    head = "| condition | busy cores (sampled) | suite kernel s (1 thread) | CLI s (automatic) | CLI / kernel"
    print(f"\n{head} | CLI s (--threads {len(cpus)}) |")
    print("|---|---:|---:|---:|---:|---:|")
    for c, r in rows.items():
        print(
            f"| {c} | {r['busy']} | {r['kernel']:.1f} | {r['cli']:.1f} | {r['cli'] / r['kernel']:.2f}x "
            f"| {r['cli_all']:.1f} |"
        )
    print(
        "\n| condition | threads chosen | train img/s | per free core | attack (PGD-10) img/s "
        "| per free core |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for c, r in rows.items():
        print(
            f"| {c} | {r['threads']} | {r['train']:.0f} | {r['train'] / r['free']:.0f} | {r['attack']:.0f} "
            f"| {r['attack'] / r['free']:.0f} |"
        )
    idle, loaded = rows["idle"], rows["loaded"]
    for key in ("train", "attack"):
        kept = (loaded[key] / loaded["free"]) / (idle[key] / idle["free"])
        print(f"{key}: {100 * kept:.0f}% of the idle throughput per free core kept under load")
    print(f"(total {time.perf_counter() - started:.0f} s; CLI times include the start-up above)")


def _timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, env=ENV, capture_output=True, check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
