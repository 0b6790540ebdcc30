"""The commands a user runs under torchrun: `train`, then `compress` with pruning and adversarial fine-tuning.

tests/test_ddp.py checks the fit loop itself against one process; this checks that the CLI around it
behaves as one command on 2 ranks: one result on stdout, each note once, one checkpoint, and that an
objective which runs extra forward passes (PGD crafting through the DistributedDataParallel wrapper)
fine-tunes a pruned model with its pruned weights kept at zero.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from robustcompress.checkpoint import load_checkpoint
from robustcompress.compression.pruning.masks import masks_of

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
        "PYTHONPATH": str(REPO / "src"),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    command += [f"--master-port={_free_port()}", "-m", "robustcompress", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_train_then_compress_with_pgd_finetuning_under_torchrun(data_root, tmp_path):
    data = ["--dataset", "fashion-mnist", "--data-root", str(data_root), "--limit-train", "440"]
    data += ["--limit-test", "100"]
    trained = _torchrun(
        "train", "--model", "cnn8", "--width", "0.25", *data, "--epochs", "1", "--batch-size", "32",
        "--out", str(tmp_path / "ck"),
    )  # fmt: skip
    assert len(trained.stdout.splitlines()) == 1  # one JSON result, from rank 0
    assert json.loads(trained.stdout)["train.epochs"] == 1
    assert trained.stderr.count("epoch 1:") == 1 and trained.stderr.count("checkpoint:") == 1

    out = tmp_path / "pruned-at"
    tuned = _torchrun(
        "compress", str(tmp_path / "ck"), "--prune", "global", "--amount", "0.5", "--finetune-epochs", "1",
        "--objective", "pgd", "--objective-param", "steps=2", *data, "--out", str(out),
    )  # fmt: skip
    assert len(tuned.stdout.splitlines()) == 1
    assert tuned.stderr.count("epoch 1:") == 1 and tuned.stderr.count("evaluating output: clean") == 1

    model, meta = load_checkpoint(out)
    assert meta["recipe"][-1]["objective"] == "pgd"
    masks = masks_of(model)
    assert masks, "the pruning masks were lost"
    removed = sum(int((m == 0).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert abs(removed - 0.5) < 0.01
    # pruned weights stay exactly zero through PGD fine-tuning (they did not while the attack swapped
    # the weights to channels-last under DistributedDataParallel: device.channels_last)
    for name, mask in masks.items():
        module, _, param = name.rpartition(".")
        original = model.get_submodule(module).parametrizations[param].original
        assert (original[mask == 0] == 0).all(), f"{name}: a pruned weight revived"
