"""One fine-tuning spec for every training stage: shared names, old names still read, cache keys unchanged.

tests/data/stage_key_dicts.json holds, for each stage, configs written in the old key names and the
`key_dict()` each produced before the fine-tuning fields were shared (computed with that code).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustcompress.compression.clustering import ClusterConfig, cluster_model
from robustcompress.compression.layers import matches_any
from robustcompress.compression.pruning import IMPORTANCES, PruneConfig
from robustcompress.compression.quantization import PTQConfig, QATConfig
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import parse_typed
from robustcompress.experiments.runner import digest
from robustcompress.stages import STAGES
from robustcompress.training import TrainConfig
from robustcompress.training.finetune import PAPER000, FinetuneConfig, FinetuneSpec, finetune_config, tenth_lr

PINNED = json.loads((Path(__file__).parent / "data" / "stage_key_dicts.json").read_text())


@pytest.mark.parametrize("stage", sorted(PINNED))
def test_stage_key_dicts_are_what_they_were(stage):
    config_cls = STAGES.get(stage).config_cls
    for case in PINNED[stage]:
        assert config_cls.parse(case["input"], where=stage).key_dict() == case["key_dict"], case["input"]


OLD_AND_NEW = [
    ("prune", {"schedule": "iterative", "finetune_epochs": 2}, {"schedule": "iterative", "epochs": 2}),
    ("cluster", {"finetune_epochs": 3, "skip": ["fc"], "batch_size": 16},
     {"epochs": 3, "exclude": ["fc"], "batch_size": 16}),
    ("ptq", {"batch_size": 16, "skip": ["fc"]}, {"calibration_batch_size": 16, "exclude": ["fc"]}),
    ("qat", {"batch_size": 16, "train_batch_size": 8, "skip": ["fc"]},
     {"calibration_batch_size": 16, "batch_size": 8, "exclude": ["fc"]}),
    ("qat", {"train_batch_size": 8}, {"batch_size": 8}),
    ("int8", {"batch_size": 16}, {"calibration_batch_size": 16}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "old", "new"), OLD_AND_NEW, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(OLD_AND_NEW)]
)
def test_old_and_new_key_names_give_the_same_config_and_cache_key(stage, old, new):
    _, from_old = parse_typed({"type": stage, **old}, STAGES, "stage 0")
    _, from_new = parse_typed({"type": stage, **new}, STAGES, "stage 0")
    assert from_old == from_new
    assert digest(from_old.key_dict()) == digest(from_new.key_dict())
    for old_name in old:  # the cache key keeps the old names
        assert old_name in from_new.key_dict()


def test_qat_batch_size_is_the_finetuning_batch_unless_the_config_uses_old_names():
    assert QATConfig(batch_size=8).calibration_batch_size == 64
    assert QATConfig(batch_size=8).batch_size == 8
    old = QATConfig.parse({"batch_size": 16, "skip": ["fc"]})  # written when batch_size was calibration
    assert (old.calibration_batch_size, old.batch_size, old.exclude) == (16, None, ["fc"])
    assert PTQConfig.parse({"batch_size": 16}).calibration_batch_size == 16


@pytest.mark.parametrize(("stage", "data"), [("cluster", {"finetune_epochs": 1, "epochs": 2}),
                                             ("ptq", {"skip": ["a"], "exclude": ["b"]})])  # fmt: skip
def test_a_field_and_its_old_name_together_are_refused(stage, data):
    with pytest.raises(ConfigError, match="given twice"):
        parse_typed({"type": stage, **data}, STAGES, "stage 0")


NEW_NAMES = {"epochs": 2, "optimizer": "adamw", "lr": 0.003, "momentum": 0.8, "weight_decay": 1e-5,
             "batch_size": 16, "patience": 2, "max_steps_per_epoch": 4, "objective": "pgd",
             "objective_params": {"steps": 2}}  # fmt: skip
TRAINING_STAGES = [name for name in STAGES if issubclass(STAGES.get(name).config_cls, FinetuneSpec)]


def test_every_stage_that_trains_shares_the_spec():
    assert {"finetune", "prune", "cluster", "qat"} <= set(TRAINING_STAGES)


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_the_shared_names_validate_and_reach_the_training_config_for_every_stage(stage):
    config_cls = STAGES.get(stage).config_cls
    lr_schedule = {"schedule": "step"} if "schedule" in config_cls.FINETUNE_FIELDS else {}
    _, cfg = parse_typed({"type": stage, **NEW_NAMES, **lr_schedule}, STAGES, "stage 0")
    train = finetune_config(TrainConfig(), cfg)
    for name, value in {**NEW_NAMES, **lr_schedule}.items():
        assert getattr(train, name) == value, name


def test_each_stage_chooses_only_its_defaults():
    base = TrainConfig(optimizer="sgd", lr=0.05, patience=3, weight_decay=5e-4, warmup_epochs=2)
    tuned = finetune_config(base, FinetuneConfig(), tenth_lr(base))  # paper 003: the experiment's SGD
    assert (tuned.optimizer, tuned.schedule, tuned.epochs) == ("sgd", "cosine", 3)
    assert tuned.lr == pytest.approx(0.005)
    assert (tuned.patience, tuned.warmup_epochs, tuned.weight_decay) == (None, 0, 5e-4)

    for paper000 in (ClusterConfig(epochs=30), QATConfig(epochs=30)):  # paper 000: Adam, lr 1e-4, patience 5
        cfg = finetune_config(base, paper000, PAPER000)
        assert (cfg.optimizer, cfg.lr, cfg.schedule, cfg.weight_decay) == ("adam", 1e-4, "constant", 0.0)
        assert (cfg.epochs, cfg.patience, cfg.restore_best, cfg.warmup_epochs) == (30, 5, True, 0)
    sgd = finetune_config(base, ClusterConfig(epochs=2, optimizer="sgd", lr=0.01, patience=None), PAPER000)
    assert (sgd.optimizer, sgd.lr, sgd.patience) == ("sgd", 0.01, None)  # the spec's fields win

    pruning = finetune_config(base, PruneConfig(schedule="gradual", epochs=4), tenth_lr(base))
    assert (pruning.patience, pruning.epochs, pruning.schedule) == (None, 4, "cosine")  # no early stopping


def test_channel_importance_choices_are_the_registry():
    for name in IMPORTANCES:
        assert PruneConfig(method="channel", importance=name).importance == name
    with pytest.raises(ConfigError) as err:
        PruneConfig.parse({"importance": "taylor"}, where="prune")
    assert all(name in str(err.value) for name in IMPORTANCES)


def test_exclude_takes_fnmatch_patterns_and_exact_names_with_pattern_characters():
    assert matches_any("features.3", ["features.*"]) and not matches_any("classifier.0", ["features.*"])
    assert matches_any("conv[a]", ["conv[a]"]) and not matches_any("conv[a]", ["convx"])
    model = nn.Sequential()
    model.add_module("conv[a]", nn.Conv2d(3, 8, 3))
    model.add_module("conv_b", nn.Conv2d(8, 8, 3))
    model.add_module("fc", nn.Linear(8, 10))
    torch.manual_seed(0)
    done = cluster_model(model, ClusterConfig(clusters=4, exclude=["conv[a]", "f*"]))
    assert sorted(done) == ["conv_b"]
