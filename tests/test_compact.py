"""The compact stage: the width whose dense model matches a compressed one, trained from scratch."""

from __future__ import annotations

import pytest
import torch

from robustcompress.checkpoint import load_checkpoint, save_checkpoint, spec_of
from robustcompress.compression.compact import find_width, measure
from robustcompress.errors import ConfigError
from robustcompress.experiments.pipeline import apply_stages, parse_stages
from robustcompress.measure import count_params
from robustcompress.models import ModelSpec
from robustcompress.stages import StageContext
from robustcompress.training import TrainConfig

TOLERANCE = 0.015  # channels are whole numbers: the best width lands within 1.5% of the target


def _ctx(splits, **train) -> StageContext:
    return StageContext(
        data=splits,
        device=torch.device("cpu"),
        seed=0,
        train=TrainConfig(batch_size=64, lr=0.05, **train),
        progress=False,
    )


@pytest.mark.parametrize(
    ("name", "channels", "size"), [("cnn8", 1, 28), ("resnet18", 3, 32)], ids=["cnn8", "resnet18"]
)
def test_width_matches_the_pruned_models_nonzero_parameters(name, channels, size, fmnist):
    spec = ModelSpec(name=name, in_channels=channels, input_size=size)
    model = spec.build(seed=0)
    [pruned] = apply_stages(
        model, parse_stages([{"type": "prune", "method": "global", "amount": 0.8}]), _ctx(fmnist)
    )
    target = count_params(pruned.model)[1]
    assert target < 0.25 * count_params(model)[0]  # 80% of the weights are gone
    width, measured = find_width(spec, target, "params", seed=0)
    assert 0.3 < width < 0.6
    dense = ModelSpec.from_dict({**spec.to_dict(), "width": width}).build()
    assert count_params(dense)[0] == measured  # a dense candidate counts every parameter
    assert abs(measured - target) / target < TOLERANCE
    # and no other width does better by a whole step: one channel step either side is further off
    for other in (width - 0.01, width + 0.01):
        n = count_params(ModelSpec.from_dict({**spec.to_dict(), "width": other}).build())[0]
        assert abs(n - target) >= abs(measured - target)


def test_width_matches_the_compressed_file_size():
    spec = ModelSpec(name="cnn8", in_channels=1, input_size=28)
    target = measure(spec.build(seed=0), "size") // 4  # what int8 storage would give
    width, measured = find_width(spec, target, "size", seed=0)
    assert 0.4 < width < 0.6  # bytes grow with the square of the width
    assert abs(measured - target) / target < TOLERANCE


def test_stage_trains_the_compact_model_and_records_its_width(fmnist, tmp_path):
    logs: list[str] = []
    ctx = _ctx(fmnist, epochs=3, max_steps_per_epoch=4)
    ctx.log = logs.append
    parent = ModelSpec.for_data("cnn8", fmnist.info).build(seed=0)
    stages = parse_stages(
        [{"type": "prune", "method": "global", "amount": 0.8}, {"type": "compact", "epochs": 1}]
    )
    pruned, step = apply_stages(parent, stages, ctx)
    small = step.model
    record = small.rc_training["compact"]
    assert record["match"] == "params" and record["target"] == count_params(pruned.model)[1]
    assert spec_of(small)["width"] == record["width"] < 1
    assert count_params(small) == (record["measured"], record["measured"])  # trained: no zeros left
    assert small.rc_training["epochs"] == 1  # the stage's epochs, not the experiment's 3
    assert any("compact: parent cnn8" in m and f"width {record['width']:g}" in m for m in logs)
    fresh = ModelSpec.from_dict(spec_of(small)).build(seed=0)
    assert not torch.equal(fresh.net.classifier[-1].weight, small.net.classifier[-1].weight)  # trained
    save_checkpoint(tmp_path / "ckpt", small)
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["model"]["width"] == record["width"]
    x = fmnist.test.x[:8]
    torch.testing.assert_close(loaded(x), small(x))


def test_user_module_cannot_be_resized(fmnist):
    model = ModelSpec.for_data("tests.user_models:tiny_net", fmnist.info).build(seed=0)
    with pytest.raises(ConfigError, match="your own module 'tests.user_models:tiny_net'.*zoo model"):
        apply_stages(model, parse_stages([{"type": "compact"}]), _ctx(fmnist))


def test_unknown_match_is_refused():
    with pytest.raises(ConfigError, match="match"):
        parse_stages([{"type": "compact", "match": "flops"}])


def test_a_study_records_the_width_and_reuses_the_compact_model(tmp_path, data_root):
    from robustcompress.checkpoint import read_meta
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.runner import run_experiments
    from tests.tiny_study import tiny_config

    recipes = """max_steps_per_epoch = 3
[[evaluations]]
type = "efficiency"
latency = false
layer_table = false
[[recipes]]
name = "compact"
stages = [{type = "prune", amount = 0.8}, {type = "compact", match = "size"}]
"""
    cfg = load_config(tiny_config(tmp_path, data_root, recipes))
    logs: list[str] = []
    run_experiments(cfg, progress=False, log=logs.append)
    metas = [read_meta(p) for p in (tmp_path / "out" / "artifacts").iterdir() if (p / "meta.json").is_file()]
    [meta] = [m for m in metas if isinstance(m["stage"], dict) and m["stage"]["type"] == "compact"]
    record = meta["training"]["compact"]
    assert record["match"] == "size" and record["parent_width"] == 0.25
    assert meta["model"]["width"] == record["width"] < 0.25
    # at a twelfth of cnn8's width one channel is a few per cent of the model: a coarser match
    assert abs(record["measured"] - record["target"]) / record["target"] < 0.05
    assert any(f"width {record['width']:g} has" in m for m in logs)
    logs.clear()
    run_experiments(cfg, progress=False, log=logs.append)  # the second run loads it: nothing retrained
    assert not any("compact: training" in m for m in logs)
