"""`robustcompress finetune`: more training of a checkpoint that keeps its compression structure."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.cli import main
from robustcompress.compression.quantization.fake import ActFakeQuant, WeightFakeQuant
from robustcompress.experiments.pipeline import apply_stages, parse_stages
from robustcompress.measure import effective_tensors
from robustcompress.stages import StageContext

LIMITS = ["--limit-train", "300", "--limit-test", "100", "--max-steps-per-epoch", "4", "--batch-size", "32"]


def _compressed_checkpoint(trained_cnn8, tmp_path, recipe):
    model, splits = trained_cnn8
    ctx = StageContext(data=splits, device=torch.device("cpu"), seed=0, progress=False)
    out = apply_stages(copy.deepcopy(model), parse_stages(recipe), ctx)[-1].model
    path = tmp_path / "parent"
    save_checkpoint(path, out, {"data": {"dataset": "fashion-mnist"}})
    return path


def _finetune(ckpt, out, data_root, *extra):
    args = [
        "finetune",
        str(ckpt),
        "--data-root",
        str(data_root),
        *LIMITS,
        "--out",
        str(out),
        "--json",
        *extra,
    ]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _weights(model):
    return {k: v for k, v in effective_tensors(model).items() if k.endswith("weight") and v.dim() > 1}


def test_finetune_keeps_pruning_zeros_where_they_were(trained_cnn8, tmp_path, data_root):
    ckpt = _compressed_checkpoint(
        trained_cnn8, tmp_path, [{"type": "prune", "method": "global", "amount": 0.6}]
    )
    result = _finetune(ckpt, tmp_path / "ft", data_root, "--objective", "pgd", "--objective-param", "eps=0.1",
                       "--objective-param", "steps=2", "--lr", "0.01")  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"acc.clean", "acc.clean.before"}
    before = _weights(load_checkpoint(ckpt)[0])
    after = _weights(load_checkpoint(tmp_path / "ft")[0])
    changed = False
    for name, w in before.items():
        assert torch.equal(after[name] == 0, w == 0), name  # same zeros, no new ones
        changed |= not torch.equal(after[name], w)
    assert changed  # the weights were trained
    assert json.loads((tmp_path / "ft" / "meta.json").read_text())["finetune"]["objective"] == "pgd"


def test_finetune_keeps_the_number_of_shared_values_per_layer(trained_cnn8, tmp_path, data_root):
    recipe = [{"type": "cluster", "clusters": 4, "preserve_sparsity": False}]
    ckpt = _compressed_checkpoint(trained_cnn8, tmp_path, recipe)
    result = _finetune(ckpt, tmp_path / "ft", data_root, "--lr", "0.01")
    assert result.exit_code == 0, result.output
    before = _weights(load_checkpoint(ckpt)[0])
    after = _weights(load_checkpoint(tmp_path / "ft")[0])
    clustered = [n for n, w in before.items() if w.unique().numel() <= 4]
    assert clustered
    for name in clustered:
        assert after[name].unique().numel() == before[name].unique().numel(), name
    assert any(not torch.equal(after[n], before[n]) for n in clustered)  # the centroids moved


def test_finetune_keeps_fake_quantizers_and_reloads(trained_cnn8, tmp_path, data_root):
    ckpt = _compressed_checkpoint(trained_cnn8, tmp_path, [{"type": "ptq", "bits": 8}])
    parent = load_checkpoint(ckpt)[0]
    result = _finetune(
        ckpt, tmp_path / "ft", data_root, "--objective", "ce", "--optimizer", "adam", "--lr", "1e-4"
    )
    assert result.exit_code == 0, result.output
    tuned, meta = load_checkpoint(tmp_path / "ft")
    for kind in (WeightFakeQuant, ActFakeQuant):
        assert sum(isinstance(m, kind) for m in tuned.modules()) == sum(
            isinstance(m, kind) for m in parent.modules()
        )
        assert any(isinstance(m, kind) for m in tuned.modules())
    assert meta["structure"] == json.loads((ckpt / "meta.json").read_text())["structure"]


def test_finetune_refuses_an_existing_out_unless_overwrite(trained_cnn8, tmp_path, data_root):
    ckpt = _compressed_checkpoint(trained_cnn8, tmp_path, [{"type": "prune", "amount": 0.5}])
    out = tmp_path / "ft"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _finetune(ckpt, out, data_root)
    assert result.exit_code == 2
    assert "--overwrite" in result.output and (out / "keep.txt").read_text() == "mine"
    assert _finetune(ckpt, out, data_root, "--overwrite").exit_code == 0
    assert (out / "meta.json").is_file()


@pytest.mark.parametrize("bad", [["--objective", "nope"], ["--objective-param", "eps"]])
def test_finetune_bad_options_exit_2(trained_cnn8, tmp_path, data_root, bad):
    ckpt = _compressed_checkpoint(trained_cnn8, tmp_path, [{"type": "prune", "amount": 0.5}])
    result = _finetune(ckpt, tmp_path / "ft", data_root, *bad)
    assert result.exit_code == 2
    assert not (tmp_path / "ft").exists()


def test_finetune_patience_stops_when_validation_accuracy_stops_improving(trained_cnn8, tmp_path, data_root):
    # at a learning rate too small to move any prediction, validation accuracy never improves on
    # epoch 1: with patience 1, epoch 2 is the last of the 4 asked for, and epoch 1 is kept
    ckpt = _compressed_checkpoint(trained_cnn8, tmp_path, [{"type": "prune", "amount": 0.5}])
    args = ["--epochs", "4", "--lr", "1e-12"]
    stopped = _finetune(ckpt, tmp_path / "ft", data_root, *args, "--patience", "1")
    assert stopped.exit_code == 0, stopped.output
    assert "stopped early after 2 of 4 epochs; kept epoch 1" in stopped.stderr
    full = _finetune(ckpt, tmp_path / "ft-all", data_root, *args)
    assert full.exit_code == 0 and "stopped early" not in full.stderr
