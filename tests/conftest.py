"""Shared fixtures: real data from ../shared/data (next to the repository) and a small trained cnn8."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread for the whole suite: the tests use small batches, which gain nothing from
# threads, and two xdist workers with two threads each oversubscribe two cores (measured several
# times slower here).
torch.set_num_threads(1)


def _data_root() -> Path:
    env = os.environ.get("ROBUSTCOMPRESS_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "fashion-mnist").is_dir():
        pytest.fail(f"test data not found at {root}: set ROBUSTCOMPRESS_TEST_DATA to the shared/data folder")
    return root


@pytest.fixture(scope="session")
def fmnist(data_root):
    """Fashion-MNIST: 1000 train / 100 val / 500 test images."""
    from robustcompress.data import load_dataset

    return load_dataset(
        "fashion-mnist", root=data_root, limit_train=1100, val_fraction=100 / 1100, limit_test=500, seed=0
    )


@pytest.fixture(scope="session")
def cifar_small(data_root):
    """The exact CIFAR-10 subset: 400 train / 50 val / 200 test images."""
    from robustcompress.data import load_dataset

    path = data_root / "cifar10" / "cifar10_exact_subset.npz"
    return load_dataset(
        f"npz:{path}", root=data_root, limit_train=450, val_fraction=50 / 450, limit_test=200, seed=0
    )


@pytest.fixture(scope="session")
def trained_cnn8(data_root):
    """(model, splits): cnn8 trained 2 epochs on 3000 Fashion-MNIST images (~80% test accuracy).

    Session-scoped: copy.deepcopy it before changing it.
    """
    from robustcompress.data import load_dataset
    from robustcompress.models import ModelSpec
    from robustcompress.training import TrainConfig, fit

    splits = load_dataset(
        "fashion-mnist", root=data_root, limit_train=3300, val_fraction=300 / 3300, limit_test=500, seed=0
    )
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn8", splits.info).build()
    fit(model, splits, TrainConfig(epochs=2, batch_size=64, lr=0.05), device="cpu", seed=0, progress=False)
    return model.eval(), splits


@pytest.fixture(autouse=True)
def _shared_cnn8_back_in_eval_mode(request):
    """Tests share the session's trained cnn8; one that trains or attacks it may leave it in train
    mode, which changes what batch norm computes for every later test in the same worker."""
    yield
    if "trained_cnn8" in request.fixturenames:
        request.getfixturevalue("trained_cnn8")[0].eval()
