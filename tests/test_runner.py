import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import ExperimentConfig, expand_grid, load_config
from robustcompress.experiments.runner import run_experiments
from robustcompress.experiments.store import ResultsStore


def _config(tmp_path, data_root, extra=""):
    path = tmp_path / "exp.toml"
    path.write_text(f"""
name = "tiny"
output = "{tmp_path / "out"}"
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = 500
limit_test = 200
[model]
name = "cnn8"
width = 0.25
[train]
epochs = 1
batch_size = 64
{extra}
""")
    return path


def test_run_writes_store_and_metrics_and_reruns_from_cache(tmp_path, data_root):
    extra = """
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "tuned"
stages = [{type = "finetune", epochs = 1}]
"""
    cfg = load_config(_config(tmp_path, data_root, extra))
    logs: list[str] = []
    results = run_experiments(cfg, progress=False, log=logs.append)
    assert [r.name for r in results] == ["tiny/plain", "tiny/tuned"]
    assert sum("training cnn8" in m for m in logs) == 1  # the shared baseline is trained once
    tuned = results[1]
    assert set(tuned.metrics) == {"baseline", "final"}
    assert 0 < tuned.metrics["final"]["acc.clean"] <= 1
    saved = json.loads((tmp_path / "out" / "tiny_tuned" / "metrics.json").read_text())
    assert saved["models"]["final"]["acc.clean"] == tuned.metrics["final"]["acc.clean"]
    store = ResultsStore(tmp_path / "out" / "results.sqlite")
    assert (
        store.metrics("tiny/tuned")[("tiny/tuned", "final")]["acc.clean"]
        == tuned.metrics["final"]["acc.clean"]
    )

    logs.clear()
    again = run_experiments(cfg, progress=False, log=logs.append)
    assert not any("training" in m or "evaluating" in m or "stage" in m for m in logs)
    assert again[1].metrics == tuned.metrics

    shown = CliRunner().invoke(main, ["results", str(tmp_path / "out")])
    assert shown.exit_code == 0 and "tiny/tuned" in shown.output and "acc.clean" in shown.output
    missing = CliRunner().invoke(main, ["results", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results store" in missing.output


def test_grid_expands_to_named_points():
    cfg = ExperimentConfig.parse({"name": "g", "grid": {"model.width": [0.5, 1.0], "seed": [0, 1]}})
    points = expand_grid(cfg)
    assert len(points) == 4
    assert {p.model.width for p in points} == {0.5, 1.0}
    assert points[0].name == "g[width=0.5,seed=0]"


def test_preset_entries_expand_with_their_budget_and_strength():
    from robustcompress.experiments.config import expand_presets

    entry = {"type": "preset", "name": "deep-compression", "epochs": 2, "amount": 0.8}
    stages = expand_presets([entry])
    assert [s["type"] for s in stages] == ["prune", "finetune", "cluster"]
    assert stages[0]["amount"] == 0.8 and stages[1]["epochs"] == 2 and stages[2]["finetune_epochs"] == 2
    cfg = ExperimentConfig.parse({"name": "p", "stages": [entry]})
    assert [name for name, _ in cfg.validated_stages()] == ["prune", "finetune", "cluster"]
    with pytest.raises(ConfigError, match="unknown key.*speed.*allowed: name, epochs"):
        expand_presets([{**entry, "speed": 1}])


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate_with_every_recipe_and_evaluation(path):
    from robustcompress.experiments.config import expand_presets, parse_typed
    from robustcompress.experiments.stages import STAGES
    from robustcompress.training.finetune import FinetuneConfig, finetune_config

    cfg = load_config(path)
    assert cfg.validated_evaluations() and cfg.recipes
    for recipe in cfg.recipes:
        for i, entry in enumerate(expand_presets(recipe.stages)):
            _, stage = parse_typed(entry, STAGES, f"{recipe.name} stage {i}")
            if isinstance(stage, FinetuneConfig):
                finetune_config(cfg.train, stage)  # the merged training config validates too


def test_finetune_stage_sets_momentum_and_weight_decay_without_changing_old_cache_keys():
    from robustcompress.training import TrainConfig
    from robustcompress.training.finetune import FinetuneConfig, finetune_config

    base = TrainConfig(momentum=0.0, weight_decay=0.0)
    plain = FinetuneConfig(objective="pgd")
    assert finetune_config(base, plain).momentum == 0.0
    tuned = finetune_config(base, FinetuneConfig(objective="pgd", momentum=0.9, weight_decay=1e-4))
    assert (tuned.momentum, tuned.weight_decay) == (0.9, 1e-4)
    assert "momentum" not in plain.key_dict() and "weight_decay" not in plain.key_dict()
    assert FinetuneConfig(momentum=0.9).key_dict()["momentum"] == 0.9
    with pytest.raises(ConfigError, match="momentum"):
        FinetuneConfig.parse({"momentum": 1.5}, where="finetune")
