"""One training on 2 CPU processes (torchrun, gloo) against one process: the same training.

Tolerances: a model without batch norm and dropout (mlp) trains to the single-process weights up to
float summation order (relative 1e-6), because each rank takes its slice of the same global batch
and the loss of unequal slices is weighted so that the averaged gradient is the global mean.
cnn8 normalises each rank's half-batch with its own batch-norm statistics and draws its dropout
masks per rank (as DistributedDataParallel does everywhere), so its accuracies after 2 epochs on
2,970 images are held to within 0.05 of one process (measured: 0.754 against 0.740 test accuracy),
its last training loss within 10%; all ranks end with identical weights.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "ddp_fit.py"


def _metrics(history: list[dict]) -> list[dict]:
    """A history without its timings (images per second differ from run to run)."""
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in history]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], data_root, results: Path, processes: int) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "MASTER_ADDR": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    }
    command = [sys.executable, str(SCRIPT)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
        command[4:4] = [f"--master-port={_free_port()}"]
    command += ["--data-root", str(data_root), "--results", str(results), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {f.name.removesuffix(".json"): json.loads(f.read_text()) for f in results.glob("*.json")}


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    args = [
        "--model",
        "mlp,cnn8",
        "--prune",
        "--limit-train",
        "3300",
        "--batch-size",
        "63",
    ]  # 2970 % 63 = 9: an odd last batch
    single = _launch([*args, "--out", str(tmp / "ck1")], data_root, tmp / "single", 1)
    ddp = _launch([*args, "--out", str(tmp / "ck2")], data_root, tmp / "ddp", 2)
    return single, ddp, tmp, args


def test_without_batch_norm_ddp_is_the_single_process_training(runs):
    single, ddp, *_ = runs
    one, r0, r1 = single["mlp.rank0"], ddp["mlp.rank0"], ddp["mlp.rank1"]
    assert r0["fingerprint"] == r1["fingerprint"]
    assert r0["fingerprint"] == pytest.approx(one["fingerprint"], rel=1e-6)
    for a, b in zip(one["history"], r0["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1e-6)
    assert r0["test_acc"] == pytest.approx(one["test_acc"], abs=1e-6)


def test_cnn8_matches_one_process_within_tolerance_and_ranks_agree(runs):
    single, ddp, *_ = runs
    one, r0, r1 = single["cnn8.rank0"], ddp["cnn8.rank0"], ddp["cnn8.rank1"]
    assert _metrics(r0["history"]) == _metrics(r1["history"]) and r0["fingerprint"] == r1["fingerprint"]
    assert r0["test_acc"] == r1["test_acc"] and r0["best_val_acc"] == r1["best_val_acc"]
    assert one["test_acc"] > 0.5  # it did learn
    assert r0["test_acc"] == pytest.approx(one["test_acc"], abs=0.05)
    assert r0["best_val_acc"] == pytest.approx(one["best_val_acc"], abs=0.05)
    assert r0["history"][-1]["train_loss"] == pytest.approx(one["history"][-1]["train_loss"], rel=0.1)


def test_masks_survive_and_pruned_weights_stay_zero(runs):
    _, ddp, *_ = runs
    for rank in ("rank0", "rank1"):
        assert ddp[f"cnn8.{rank}"]["masked"] == 8 and ddp[f"mlp.{rank}"]["masked"] == 2
        assert ddp[f"cnn8.{rank}"]["pruned_nonzero"] == 0 and ddp[f"mlp.{rank}"]["pruned_nonzero"] == 0


def test_checkpoints_are_written_by_rank_0_only(runs):
    _, ddp, tmp, _ = runs
    assert ddp["cnn8.rank0"]["saves"] == [1, 2, 2]  # each epoch, then the best epoch's weights restored
    assert ddp["cnn8.rank1"]["saves"] == []
    assert (tmp / "ck2" / "model.safetensors").is_file()


def test_resume_under_ddp_is_exact(runs, data_root):
    _, ddp, tmp, args = runs
    stopped = [*args, "--model", "cnn8", "--stop-after", "1", "--out", str(tmp / "ck3")]
    resumed = _launch(stopped, data_root, tmp / "resumed", 2)  # 1 epoch, then a fresh model resumes
    straight = ddp["cnn8.rank0"]
    for rank in ("rank0", "rank1"):
        assert _metrics(resumed[f"cnn8.{rank}"]["history"]) == _metrics(straight["history"])
        assert resumed[f"cnn8.{rank}"]["fingerprint"] == straight["fingerprint"]
    assert resumed["cnn8.rank0"]["saves"] == [1, 1, 2, 2] and resumed["cnn8.rank1"]["saves"] == []
