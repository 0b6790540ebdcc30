import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from robustcompress.errors import ConfigError
from robustcompress.evaluation import accuracy
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit, make_objective


def _model(splits, width=0.5):
    torch.manual_seed(0)
    return ModelSpec.for_data("cnn8", splits.info, width=width).build()


def test_training_learns_fashion_mnist(fmnist):
    model = _model(fmnist)
    before = accuracy(model, fmnist.test)
    result = fit(model, fmnist, TrainConfig(epochs=2, batch_size=64, lr=0.05), device="cpu", progress=False)
    after = accuracy(model, fmnist.test)
    assert before < 0.3 and after > 0.65
    assert [row["epoch"] for row in result.history] == [1, 2]
    # throughput is consistent with the run's wall time: training 1000 images an epoch fills most of it
    train_seconds = sum(len(fmnist.train) / row["images_per_s"] for row in result.history)
    assert 0.5 * result.seconds < train_seconds <= result.seconds


def test_same_seed_same_weights_on_cpu(fmnist):
    cfg = TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=5)
    a, b = _model(fmnist, 0.25), _model(fmnist, 0.25)
    fit(a, fmnist, cfg, device="cpu", seed=3, progress=False)
    fit(b, fmnist, cfg, device="cpu", seed=3, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = _model(fmnist, 0.25)
    fit(c, fmnist, cfg, device="cpu", seed=4, progress=False)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_early_stopping_with_patience(fmnist):
    # lr so small nothing improves after the first epoch: stops after 1 + patience epochs
    cfg = TrainConfig(
        epochs=10, batch_size=128, lr=1e-9, patience=2, schedule="constant", max_steps_per_epoch=2
    )
    result = fit(_model(fmnist, 0.25), fmnist, cfg, device="cpu", progress=False)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


@pytest.mark.parametrize("optimizer,schedule", [("adam", "step"), ("adamw", "constant"), ("sgd", "cosine")])
def test_optimizers_and_schedules(fmnist, optimizer, schedule):
    cfg = TrainConfig(
        epochs=2,
        optimizer=optimizer,
        lr=1e-3,
        schedule=schedule,
        step_every=1,
        gamma=0.5,
        max_steps_per_epoch=2,
    )
    result = fit(_model(fmnist, 0.25), fmnist, cfg, device="cpu", progress=False)
    lrs = [row["lr"] for row in result.history]
    expected = {"step": [1e-3, 5e-4], "constant": [1e-3, 1e-3], "cosine": [1e-3, 5e-4]}[schedule]
    assert lrs == pytest.approx(expected)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key 'epoch'.*epochs"):
        TrainConfig.parse({"epoch": 3})
    with pytest.raises(ConfigError, match="'optimizer'.*sgd"):
        TrainConfig.parse({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="'lr'"):
        TrainConfig.parse({"lr": -1})
    with pytest.raises(ConfigError, match="unknown objective"):
        make_objective("nope")


def _train_cmd(data_root, out, resume=False):
    cmd = [
        sys.executable,
        "-m",
        "robustcompress.cli",
        "train",
        "--model",
        "cnn8",
        "--width",
        "0.5",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        str(data_root),
        "--limit-train",
        "1200",
        "--limit-test",
        "200",
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--seed",
        "7",
        "--out",
        str(out),
        "--json",
    ]
    return cmd + (["--resume"] if resume else [])


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run(
        _train_cmd(data_root, tmp_path / "full"), capture_output=True, text=True, env=env, check=True
    )
    expected = json.loads(full.stdout)

    proc = subprocess.Popen(
        _train_cmd(data_root, tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    meta = tmp_path / "killed" / "meta.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (meta.exists() and '"epochs_done": 1' in meta.read_text()):
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(meta.read_text())["training"]["epochs_done"] < 3

    resumed = subprocess.run(
        _train_cmd(data_root, tmp_path / "killed", resume=True),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    got = json.loads(resumed.stdout)
    assert got["acc.clean"] == expected["acc.clean"]
    assert got["acc.val"] == expected["acc.val"]
