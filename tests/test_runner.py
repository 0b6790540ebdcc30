import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import ExperimentConfig, expand_grid, load_config
from robustcompress.experiments.runner import plan, run_experiments
from robustcompress.experiments.store import ResultsStore
from tests.tiny_study import tiny_config


def test_run_writes_store_and_metrics_and_reruns_from_cache(tmp_path, data_root):
    extra = """
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "tuned"
stages = [{type = "finetune", epochs = 1}]
"""
    cfg = load_config(tiny_config(tmp_path, data_root, extra))
    before = plan(cfg)  # the keys of everything the run will make, nothing made yet
    assert [p.name for p in before] == ["tiny/plain", "tiny/tuned"]
    assert not any(a.cached or any(e.stored for e in a.evaluations) for p in before for a in p.artifacts)
    assert not (tmp_path / "out").exists()  # a plan writes nothing
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

    after = plan(cfg)
    assert [[a.key for a in p.artifacts] for p in after] == [[a.key for a in p.artifacts] for p in before]
    plain, tuned_plan = after
    assert [a.label for a in tuned_plan.artifacts] == ["baseline", "final"]
    assert [a.key for a in plain.artifacts] == [tuned_plan.artifacts[0].key]  # one shared baseline
    assert {
        a.label: str(tmp_path / "out" / "artifacts" / a.key) for a in tuned_plan.artifacts
    } == tuned.artifacts
    assert all(a.cached and [e.stored for e in a.evaluations] == [True] for a in tuned_plan.artifacts)

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
    assert stages[0]["amount"] == 0.8 and stages[1]["epochs"] == 2 and stages[2]["epochs"] == 2
    cfg = ExperimentConfig.parse({"name": "p", "stages": [entry]})
    assert [name for name, _ in cfg.validated_stages()] == ["prune", "finetune", "cluster"]
    with pytest.raises(ConfigError, match="unknown key.*speed.*allowed: name, epochs"):
        expand_presets([{**entry, "speed": 1}])


SHIPPED_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate_with_every_recipe_and_evaluation(path):
    from robustcompress.experiments.config import expand_presets, parse_typed
    from robustcompress.stages import STAGES
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


def test_plan_labels_and_evaluated_models_follow_evaluate_stages(tmp_path, data_root):
    stages = '[{type = "prune", amount = 0.5}, {type = "finetune", epochs = 1}]'
    every = ["baseline", "stage0:prune", "final"]
    for evaluate_stages, evaluated in [(False, ["baseline", "final"]), (True, every)]:
        path = tiny_config(tmp_path, data_root)
        top = f"evaluate_stages = {str(evaluate_stages).lower()}\nstages = {stages}\n[data]"
        path.write_text(path.read_text().replace("[data]", top))
        [p] = plan(load_config(path))
        assert [(a.label, a.stage) for a in p.artifacts] == [
            ("baseline", "baseline"),
            ("stage0:prune", "prune"),
            ("final", "finetune"),
        ]
        assert [a.label for a in p.artifacts if a.evaluations] == evaluated
        assert [e["type"] for e in p.evaluations] == ["clean"]
        assert len({a.key for a in p.artifacts}) == 3


def test_run_evaluations_compares_with_the_parent_and_reuses_stored_metrics(tmp_path, fmnist):
    import torch

    from robustcompress.evaluation import EvalContext
    from robustcompress.experiments.pipeline import parse_evaluations, run_evaluations
    from robustcompress.models import ModelSpec

    model, parent = (ModelSpec.for_data("cnn8", fmnist.info, width=0.25).build(seed=s) for s in (1, 2))
    corruption = {"type": "corruption", "corruptions": ["fog"], "severities": [1], "n_examples": 64}
    evaluations = parse_evaluations([{"type": "clean"}, corruption])
    cpu = torch.device("cpu")
    alone = run_evaluations(parent, evaluations, EvalContext(data=fmnist, device=cpu))
    logs: list[str] = []
    ctx = EvalContext(data=fmnist, device=cpu, parent=parent, log=logs.append)
    record = ResultsStore(tmp_path / "r.sqlite").record("e", "final", "artifact0")
    metrics = run_evaluations(model, evaluations, ctx, store=record, label="final")
    # the parent ran the corruption evaluation first; CE is this model's error over the parent's
    assert [m for m in logs if m.startswith("evaluating")] == [
        "evaluating parent: corruption",
        "evaluating final: clean",
        "evaluating final: corruption",
    ]
    timed = [re.fullmatch(r"evaluated (\w+): (\w+) in \d+\.\d s", m) for m in logs]
    assert [m.groups() for m in timed if m] == [
        ("parent", "corruption"),
        ("final", "clean"),
        ("final", "corruption"),
    ]
    assert metrics["corruption.baseline"] == "baseline-metrics"
    assert metrics["ce.fog"] == pytest.approx(100 * metrics["err.fog.1"] / alone["err.fog.1"])

    logs.clear()
    ctx = EvalContext(data=fmnist, device=cpu, parent=parent, log=logs.append)
    assert run_evaluations(model, evaluations, ctx, store=record, label="final") == metrics
    assert [m for m in logs if m.startswith("evaluating")] == [
        "evaluating parent: corruption"
    ]  # the model's own evaluations came from the store


def test_apply_stages_leaves_its_input_alone(fmnist):
    import copy

    import torch

    from robustcompress.checkpoint import structure_of
    from robustcompress.experiments.pipeline import apply_stages, parse_stages
    from robustcompress.models import ModelSpec
    from robustcompress.stages import StageContext

    model = ModelSpec.for_data("cnn8", fmnist.info, width=0.25).build(seed=0)
    before = copy.deepcopy(model.state_dict())
    logs: list[str] = []
    ctx = StageContext(data=fmnist, device=torch.device("cpu"), parent=model, progress=False, log=logs.append)
    steps = apply_stages(model, parse_stages([{"type": "prune", "amount": 0.5}, {"type": "ptq"}]), ctx)
    assert [s.label for s in steps] == ["stage0:prune", "stage1:ptq"] and all(s.key is None for s in steps)
    # each stage's log ends with its wall time, so a user can read from a log where a run's time went
    finished = [re.fullmatch(r"finished stage (\d) \((\w+)\) in \d+\.\d s", m) for m in logs]
    assert [m.groups() for m in finished if m] == [("0", "prune"), ("1", "ptq")]
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kinds = [[s["kind"] for s in structure_of(m)] for m in (model, steps[0].model, steps[1].model)]
    assert kinds[:2] == [[], ["prune_masks"]] and kinds[2][0] == "prune_masks" and "fake_quant" in kinds[2]
