"""Train cnn8 on a Fashion-MNIST subset with `fit`, in one process or as one torchrun rank.

Used by tests/test_ddp.py and benchmarks/bench_ddp.py: writes <results>/<model>.rank<R>.json with the
history, the test accuracy, how many checkpoints this rank wrote, a fingerprint of the weights
and, with --prune, how many pruned weights are non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from robustcompress.compression.pruning.masks import apply_masks, masks_of
from robustcompress.data import load_dataset
from robustcompress.measure import accuracy
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit, loop

SAVES: list[int] = []  # the epochs of the checkpoints this rank wrote
_save = loop._save
loop._save = lambda *args: (SAVES.append(args[6]), _save(*args))


def build(a, splits, name: str) -> torch.nn.Module:
    if name == "cnn8":
        model = ModelSpec.for_data("cnn8", splits.info, width=a.width).build(seed=0)
    else:
        torch.manual_seed(0)
        layers = [torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)]
        model = torch.nn.Sequential(*layers)
    if a.prune:
        weights = {n: w for n, w in model.named_parameters() if w.dim() > 1}
        apply_masks(model, {n: (w.abs() > w.abs().flatten().median()).float() for n, w in weights.items()})
    return model


def train(a, splits, name: str) -> dict:
    SAVES.clear()
    checkpoint = a.out if name == "cnn8" else None
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=0.05, schedule="constant", amp=False)
    if a.stop_after:  # a run stopped after some epochs, then resumed from its checkpoint by a fresh model
        first = cfg.model_copy(update={"epochs": a.stop_after})
        fit(build(a, splits, name), splits, first, device="cpu", checkpoint_dir=checkpoint, progress=False)
    model = build(a, splits, name)
    resume = a.resume or bool(a.stop_after)
    result = fit(model, splits, cfg, device="cpu", checkpoint_dir=checkpoint, resume=resume, progress=False)
    state = model.state_dict()
    masks = masks_of(model)
    pruned_nonzero = 0
    for key, mask in masks.items():
        module, _, param = key.rpartition(".")
        original = model.get_submodule(module).parametrizations[param].original
        pruned_nonzero += int((original[mask == 0] != 0).sum())
    out = {
        "history": result.history,
        "best_val_acc": result.best_val_acc,
        "test_acc": accuracy(model, splits.test),
        "saves": list(SAVES),
        "fingerprint": float(sum(v.double().abs().sum() for v in state.values() if v.is_floating_point())),
        "masked": len(masks),
        "pruned_nonzero": pruned_nonzero,
        "seconds": result.seconds,
    }
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", default=None, help="checkpoint folder")
    p.add_argument("--results", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=1100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, default=0, help="train this many epochs first, then resume")
    p.add_argument("--prune", action="store_true", help="mask half of every weight by magnitude first")
    p.add_argument("--model", default="cnn8", help="cnn8, mlp (no batch norm, no dropout) or both: mlp,cnn8")
    a = p.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset(
        "fashion-mnist", root=a.data_root, limit_train=a.limit_train, val_fraction=0.1, limit_test=500, seed=0
    )
    Path(a.results).mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    for name in a.model.split(","):
        result = train(a, splits, name)
        (Path(a.results) / f"{name}.rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
