"""Configs that start from a model you have: `[model] weights = FILE` or `[model] checkpoint = FOLDER`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.cli import main
from robustcompress.data import load_dataset
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import load_config
from robustcompress.experiments.runner import plan, run_experiments
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit

DATA = {"limit_train": 300, "limit_test": 200}


@pytest.fixture(scope="module")
def trained(fmnist):
    """cnn8 (half width) trained one epoch on 1000 Fashion-MNIST images, behind the dataset's mean/std."""
    model = ModelSpec.for_data("cnn8", fmnist.info, width=0.5).build(seed=1)
    fit(model, fmnist, TrainConfig(epochs=1, batch_size=64, lr=0.05), device="cpu", seed=1, progress=False)
    return model.eval()


def _test_split(data_root):
    return load_dataset("fashion-mnist", root=data_root, seed=0, val_fraction=0.1, **DATA).test


def _plain_accuracy(model, images) -> float:
    """Accuracy as plain PyTorch computes it: one forward pass over the images."""
    with torch.no_grad():
        return (model(images.x).argmax(1) == images.y).float().mean().item()


def _config(tmp_path, data_root, model: str, extra: str = "", name: str = "given"):
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
output = "{tmp_path / "out"}"
{extra}
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = {DATA["limit_train"]}
limit_test = {DATA["limit_test"]}
[model]
{model}
[train]
epochs = 3        # would change the model if the given baseline were trained
batch_size = 64
lr = 0.05
""")
    return path


def _weights_file(tmp_path, model, name="net.pth"):
    path = tmp_path / name
    torch.save(model.net.state_dict(), path)  # a plain PyTorch state dict, no normalisation layer
    return path


def _given_weights(path) -> str:
    return f'name = "cnn8"\nwidth = 0.5\nweights = "{path}"\nnormalize = "dataset"'


def _checkpoint(tmp_path, model, dataset="fashion-mnist"):
    return save_checkpoint(tmp_path / "ckpt", model, {"data": {"dataset": dataset}})


def test_weights_file_is_the_baseline_with_its_exact_accuracy(tmp_path, data_root, trained):
    weights = _weights_file(tmp_path, trained)
    path = _config(tmp_path, data_root, _given_weights(weights))
    logs: list[str] = []
    [result] = run_experiments(load_config(path), progress=False, log=logs.append)
    assert result.metrics["baseline"]["acc.clean"] == _plain_accuracy(trained, _test_split(data_root))
    assert not any("training" in m for m in logs)  # the given model is the baseline: nothing trained
    baseline, meta = load_checkpoint(result.artifacts["baseline"])
    assert meta["given"]["weights"] == str(weights) and len(meta["given"]["sha256"]) == 64
    pairs = zip(baseline.state_dict().values(), trained.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_normalize_as_lists_is_the_same_model_and_key_as_dataset(tmp_path, data_root, trained, fmnist):
    weights = _weights_file(tmp_path, trained)
    base = f'name = "cnn8"\nwidth = 0.5\nweights = "{weights}"\n'
    mean, std = list(fmnist.info.mean), list(fmnist.info.std)
    by_name = plan(load_config(_config(tmp_path, data_root, base + 'normalize = "dataset"', name="a")))
    lists = f"normalize = [{mean}, {std}]"
    by_lists = plan(load_config(_config(tmp_path, data_root, base + lists, name="b")))
    raw = plan(load_config(_config(tmp_path, data_root, base + 'normalize = "none"', name="c")))
    assert by_name[0].artifacts[0].key == by_lists[0].artifacts[0].key
    assert raw[0].artifacts[0].key != by_name[0].artifacts[0].key  # another first layer, another model


def test_checkpoint_is_the_baseline_with_its_exact_accuracy(tmp_path, data_root, trained):
    ckpt = _checkpoint(tmp_path, trained)
    path = _config(tmp_path, data_root, f'checkpoint = "{ckpt}"')  # no name: the checkpoint's own
    before = plan(load_config(path))
    assert before[0].artifacts[0].given == str(ckpt) and not before[0].artifacts[0].cached
    shown = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert f"given: {ckpt}" in shown.output and "to train" not in shown.output
    [result] = run_experiments(load_config(path), progress=False, log=lambda m: None)
    assert result.metrics["baseline"]["acc.clean"] == _plain_accuracy(trained, _test_split(data_root))
    assert plan(load_config(path))[0].artifacts[0].cached


def test_a_recipe_runs_from_the_given_baseline(tmp_path, data_root, trained):
    ckpt = _checkpoint(tmp_path, trained)
    stages = 'stages = [{type = "prune", method = "global", amount = 0.6}, {type = "finetune", epochs = 1}]'
    path = _config(tmp_path, data_root, f'name = "cnn8"\ncheckpoint = "{ckpt}"', stages)
    cfg = load_config(path)
    [result] = run_experiments(cfg, progress=False, log=lambda m: None)
    assert set(result.metrics) == {"baseline", "final"}
    [planned] = plan(cfg)
    pruned = load_checkpoint(tmp_path / "out" / "artifacts" / planned.artifacts[1].key)[0]
    given, kept = trained.net.features[0][0].weight, pruned.net.features[0][0].weight
    assert 0 < (kept == 0).float().mean() < 1
    assert torch.equal(kept, given * (kept != 0))  # the given weights, pruned (not a fresh model's)
    final = load_checkpoint(result.artifacts["final"])[0]
    assert torch.equal(final.net.features[0][0].weight == 0, kept == 0)  # the masks stay through fine-tuning


def test_editing_the_file_changes_the_baseline_and_every_stage_key(tmp_path, data_root, trained):
    weights = _weights_file(tmp_path, trained)
    extra = 'stages = [{type = "prune", amount = 0.5}]'
    path = _config(tmp_path, data_root, _given_weights(weights), extra)
    keys = [a.key for a in plan(load_config(path))[0].artifacts]
    _weights_file(tmp_path, trained)  # rewritten, same content: same keys
    assert [a.key for a in plan(load_config(path))[0].artifacts] == keys
    edited = copy.deepcopy(trained)
    with torch.no_grad():
        edited.net.features[0][0].weight[0, 0, 0, 0] += 1e-3
    _weights_file(tmp_path, edited)
    changed = [a.key for a in plan(load_config(path))[0].artifacts]
    assert len(changed) == 2 and all(new != old for new, old in zip(changed, keys))


def test_configs_that_give_no_model_keep_their_keys(tmp_path, data_root):
    """The new [model] keys stay out of the key while unset (the shipped configs' keys are pinned
    in tests/test_cache_keys.py); written out at their defaults they change nothing either."""
    plain = _config(tmp_path, data_root, 'name = "cnn8"', name="plain")
    defaults = 'name = "cnn8"\nnormalize = "none"\nreplace_head = false'
    spelled = _config(tmp_path, data_root, defaults, name="spelled")
    assert [a.key for a in plan(load_config(plain))[0].artifacts] == [
        a.key for a in plan(load_config(spelled))[0].artifacts
    ]
    assert plan(load_config(plain))[0].artifacts[0].given is None


@pytest.mark.parametrize(
    "model, fix",
    [
        ('name = "cnn8"\nweights = "{tmp}/missing.pth"', "no such file"),
        ('checkpoint = "{tmp}/missing"', "does not exist"),
        ('checkpoint = "{ckpt_cifar}"', "set [data] dataset = 'cifar10'"),
        ('name = "resnet18"\ncheckpoint = "{ckpt}"', "remove [model] name"),
        ('name = "cnn8"\ncheckpoint = "{ckpt}"\nweights = "{weights}"', "not both"),
        ('name = "cnn8"\nnormalize = "dataset"', "give [model] weights"),
        ('checkpoint = "{ckpt}"\nwidth = 0.5', "cannot be set with checkpoint"),
        ('name = "cnn8"\nwidth = 0.5\nweights = "{weights}"\nnormalize = "0.5,0.5,0.5"', "give 2"),
    ],
    ids=[
        "missing-weights",
        "missing-checkpoint",
        "dataset",
        "architecture",
        "both",
        "stray-normalize",
        "checkpoint-width",
        "normalize-channels",
    ],  # fmt: skip
)
def test_bad_model_sources_are_config_errors_and_exit_2(tmp_path, data_root, trained, model, fix):
    ckpt = _checkpoint(tmp_path, trained)
    ckpt_cifar = save_checkpoint(tmp_path / "ckpt-cifar", trained, {"data": {"dataset": "cifar10"}})
    weights = _weights_file(tmp_path, trained)
    model = model.format(tmp=tmp_path, ckpt=ckpt, ckpt_cifar=ckpt_cifar, weights=weights)
    path = _config(tmp_path, data_root, model)
    with pytest.raises(ConfigError, match=fix.replace("[", r"\[").replace("]", r"\]")):
        plan(load_config(path))
    for args in (["run", str(path), "--dry-run"], ["run", str(path)]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 2 and fix in out.output and "Traceback" not in out.output, out.output
    assert not (tmp_path / "out" / "artifacts").exists()


def test_weights_of_another_architecture_fail_the_run_naming_the_fix(tmp_path, data_root, trained):
    weights = _weights_file(tmp_path, trained)
    path = _config(tmp_path, data_root, f'name = "vgg11"\nweights = "{weights}"\nnormalize = "dataset"')
    out = CliRunner().invoke(main, ["run", str(path)])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "name = 'vgg11'" in out.output and "features.0.0.weight" in out.output  # the keys that differ
    assert "[model] name (and width, stem) is the architecture the weights were saved from" in out.output
    artifacts = tmp_path / "out" / "artifacts"
    assert not artifacts.exists() or not any((p / "meta.json").is_file() for p in artifacts.iterdir())


def test_a_grid_over_given_checkpoints_checks_each(tmp_path, data_root, trained):
    ckpt = _checkpoint(tmp_path, trained)
    other = save_checkpoint(tmp_path / "other", trained, {"data": {"dataset": "fashion-mnist"}})
    grid = f'[grid]\n"model.checkpoint" = ["{ckpt}", "{other}"]'
    points = plan(load_config(_config(tmp_path, data_root, f'checkpoint = "{ckpt}"', grid)))
    assert [p.artifacts[0].given for p in points] == [str(ckpt), str(other)]
    # identical files: identical content, one baseline
    assert points[0].artifacts[0].key == points[1].artifacts[0].key
    assert json.dumps([p.to_dict() for p in points])  # the plan serialises (run --dry-run --json)
