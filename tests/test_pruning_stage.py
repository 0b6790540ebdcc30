"""The prune stage on real data (one-shot, iterative, gradual), checkpoints of pruned models, the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

import robustcompress.compression.pruning  # noqa: F401 - registers the stage and the structures
from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.cli import main
from robustcompress.compression.pruning import (
    PruneConfig,
    bake_masks,
    is_masked,
    masks_of,
    polynomial_sparsity,
    prune_channels,
    prune_unstructured,
)
from robustcompress.errors import ConfigError
from robustcompress.evaluation import accuracy
from robustcompress.evaluation.efficiency import count_params, sparsity
from robustcompress.models import ModelSpec, build_model
from robustcompress.stages import STAGES, StageContext
from robustcompress.training import TrainConfig, fit


@pytest.fixture(scope="module")
def small_cnn8(fmnist):
    """(model, splits): a half-width cnn8 trained 2 epochs on 1000 Fashion-MNIST images (a few seconds)."""
    torch.manual_seed(0)
    model = ModelSpec.for_data("cnn8", fmnist.info, width=0.5).build()
    fit(model, fmnist, TrainConfig(epochs=2, batch_size=32, lr=0.05), device="cpu", seed=0, progress=False)
    return model.eval(), fmnist


def _ctx(splits) -> StageContext:
    return StageContext(
        data=splits,
        device=torch.device("cpu"),
        seed=0,
        train=TrainConfig(batch_size=64, lr=0.05),
        progress=False,
    )


def _apply(model, splits, **cfg):
    stage = STAGES.get("prune")
    return stage.apply(model, stage.config_cls.parse(cfg), _ctx(splits))


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="amount"):
        PruneConfig.parse({"method": "global", "amount": 1.5})
    with pytest.raises(ConfigError, match="method"):
        PruneConfig.parse({"method": "magic", "amount": 0.5})
    with pytest.raises(ConfigError, match="unknown key 'steps_'"):
        PruneConfig.parse({"method": "global", "amount": 0.5, "steps_": 2})


def test_oneshot_channel_stage_gives_a_smaller_hardened_model(small_cnn8):
    model, splits = copy.deepcopy(small_cnn8[0]), small_cnn8[1]
    dense = count_params(model)[0]
    base_acc = accuracy(model, splits.test)
    pruned = _apply(model, splits, method="channel", amount=0.5)
    assert not is_masked(pruned)
    assert count_params(pruned)[0] < 0.3 * dense
    assert pruned.net.features[0][0].out_channels == 8
    acc = accuracy(pruned, splits.test)
    assert (
        base_acc > 0.6 and 0.05 < acc <= base_acc + 0.02
    )  # without fine-tuning accuracy drops, but the model still works


def test_iterative_pruning_reaches_the_target_with_retraining(small_cnn8):
    model, splits = copy.deepcopy(small_cnn8[0]), small_cnn8[1]
    pruned = _apply(
        model, splits, method="global", amount=0.9, schedule="iterative", steps=3, finetune_epochs=1,
        max_steps_per_epoch=8,
    )  # fmt: skip
    assert is_masked(pruned)
    assert sparsity(pruned) == pytest.approx(0.9, abs=1e-5)  # exact to rounding: 1 / 147k weights
    oneshot = copy.deepcopy(small_cnn8[0])
    prune_unstructured(oneshot, 0.9, "global")
    assert accuracy(pruned, splits.test) > accuracy(oneshot, splits.test) - 0.02


def test_gradual_pruning_follows_the_polynomial_schedule(small_cnn8):
    model, splits = copy.deepcopy(small_cnn8[0]), small_cnn8[1]
    pruned = _apply(
        model, splits, method="layerwise", amount=0.8, schedule="gradual", finetune_epochs=1,
        max_steps_per_epoch=12, frequency=3, end_step=9,
    )  # fmt: skip
    assert sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert polynomial_sparsity(0, 0, 9, 0.0, 0.8) == 0.0
    assert polynomial_sparsity(9, 0, 9, 0.0, 0.8) == 0.8
    assert 0.5 < polynomial_sparsity(3, 0, 9, 0.0, 0.8) < 0.8  # steep early, as tfmot's power 3


def test_iterative_channel_pruning_then_hardening(fmnist):
    torch.manual_seed(0)
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    pruned = _apply(
        model, fmnist, method="channel", amount=0.5, schedule="iterative", steps=2, finetune_epochs=1,
        max_steps_per_epoch=4, importance="bn_scale",
    )  # fmt: skip
    assert not is_masked(pruned)
    assert [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)] == [
        4,
        4,
        8,
        8,
        16,
        16,
    ]


@pytest.mark.parametrize("kind", ["masked", "baked", "hardened"])
def test_pruned_models_round_trip_through_checkpoints(kind, tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", width=0.25, input_size=16).eval()
    x = torch.rand(2, 3, 16, 16)
    if kind == "hardened":
        prune_channels(model, 0.5)
        from robustcompress.compression.pruning import harden

        harden(model)
    else:
        prune_unstructured(model, 0.7, "global")
        if kind == "baked":
            bake_masks(model)
    out = model(x)
    save_checkpoint(tmp_path / "ckpt", model)
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert (loaded(x) - out).abs().max().item() < 1e-6
    assert count_params(loaded) == count_params(model)
    assert is_masked(loaded) == (kind == "masked")
    if kind == "masked":
        for name, mask in masks_of(loaded).items():
            assert torch.equal(mask, masks_of(model)[name])
    kinds = [e["kind"] for e in meta["structure"]]
    assert kinds == {"masked": ["prune_masks"], "baked": ["prune_masks", "prune_baked"],
                     "hardened": ["prune_masks", "prune_baked", "channel_pruned"]}[kind]  # fmt: skip


def test_compress_cli_prunes_channels(small_cnn8, data_root, tmp_path):
    model = copy.deepcopy(small_cnn8[0])
    save_checkpoint(tmp_path / "base", model, {"data": {"dataset": "fashion-mnist"}})
    args = ["compress", str(tmp_path / "base"), "--prune", "channel", "--amount", "0.5"]
    args += ["--out", str(tmp_path / "out"), "--data-root", str(data_root), "--limit-train", "300"]
    args += ["--limit-test", "200", "--device", "cpu", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < metrics["acc.clean"] <= 1
    loaded, _ = load_checkpoint(tmp_path / "out")
    assert count_params(loaded)[0] < 0.3 * count_params(model)[0]

    args = [
        "evaluate",
        str(tmp_path / "out"),
        "--runtimes",
        "eager,torchscript",
        "--parent",
        str(tmp_path / "base"),
    ]
    args += ["--data-root", str(data_root), "--limit-test", "100", "--device", "cpu", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["params"] == count_params(loaded)[0] and 3.5 < metrics["macs.reduction"] < 4.1
    assert metrics["latency.cpu_ms.b64"] > metrics["latency.cpu_ms.b1"] > 0
    assert metrics["latency.torchscript.cpu_ms.b64"] > metrics["latency.torchscript.cpu_ms.b1"] > 0
    # timed interleaved with the parent: a quarter of its MACs runs faster than it, round by round
    assert metrics["latency.cpu_ms.b64.ratio"] < 1 and metrics["latency.rounds"] == 20


def test_channel_stage_options(fmnist):
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    pruned = _apply(
        model, fmnist, method="channel", amount=0.5, keep_first=True, overrides={"*features.6.0": 0.75}
    )
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 4, 8, 8, 8, 16]
    assert pruned.net.classifier[1].out_features == 32 and pruned.net.classifier[4].out_features == 10

    masked = _apply(build_model("cnn8", in_channels=1, input_size=28, width=0.25), fmnist, method="channel",
                    amount=0.5, harden=False)  # fmt: skip
    assert is_masked(masked) and masked.net.features[0][0].out_channels == 8
