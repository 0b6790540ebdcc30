"""Runs experiments: baseline -> stages -> evaluations, with every artifact cached by the hash of its spec.

A grid of recipes trains the shared baseline once; a rerun skips finished artifacts and stored
evaluations; a killed run resumes (the baseline's training from its last epoch checkpoint).
`plan(cfg)` computes the same keys without training or evaluating anything (`run --dry-run`).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustcompress.data import load_dataset
from robustcompress.device import resolve_device
from robustcompress.errors import ConfigError
from robustcompress.evaluation.registry import EvalContext
from robustcompress.experiments.config import ExperimentConfig, expand_grid
from robustcompress.experiments.given import GivenModel, given_model, load_given
from robustcompress.experiments.pipeline import (
    ArtifactCache,
    Step,
    apply_stages,
    digest,
    evaluation_key,
    run_evaluations,
    stage_key,
)
from robustcompress.experiments.store import RESULTS_DB, ResultsStore
from robustcompress.fileio import atomic_write_json
from robustcompress.models import ModelSpec
from robustcompress.stages import StageContext
from robustcompress.training.loop import fit, training_summary

__all__ = ["ExperimentResult", "digest", "plan", "require_study", "run_experiment", "run_experiments"]


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class ExperimentResult:
    name: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> metrics
    artifacts: dict[str, str] = field(default_factory=dict)  # model label -> artifact folder
    folder: Path | None = None


def run_experiments(
    cfg: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = stderr_log
) -> list[ExperimentResult]:
    """Run every grid point of `cfg` into cfg.output; returns one result per point."""
    store = ResultsStore(Path(cfg.output) / RESULTS_DB)
    return [run_experiment(point, store=store, progress=progress, log=log) for point in expand_grid(cfg)]


def run_experiment(
    cfg: ExperimentConfig,
    *,
    store: ResultsStore | None = None,
    progress: bool = True,
    log: Callable[[str], None] = stderr_log,
) -> ExperimentResult:
    """Train (or load) the baseline, apply the stages, evaluate; everything cached by its key."""
    out = Path(cfg.output)
    store = store or ResultsStore(out / RESULTS_DB)
    store.add_experiment(cfg.name, cfg.model_dump())
    device = resolve_device(cfg.device)
    stages = cfg.validated_stages()
    evaluations = cfg.validated_evaluations()
    splits = _load_data(cfg)
    spec = _model_spec(cfg, splits.info)
    data_meta = _data_meta(cfg)
    cache = ArtifactCache(out / "artifacts", {"data": data_meta}, log)
    result = ExperimentResult(cfg.name, folder=out / experiment_folder(cfg.name))
    exp_log = lambda m: log(f"[{cfg.name}] {m}")  # noqa: E731

    given = given_model(cfg, splits.info)
    key = baseline_key(cfg, spec, given)
    training_dir = cache.path(f"{key}.training")

    def train_baseline() -> nn.Module:
        if given is not None:  # the user's model is the baseline: nothing is trained
            exp_log(f"baseline: the {given.kind} {given.path}")
            return load_given(given, cfg, splits.info)
        model = spec.build(seed=cfg.seed)
        exp_log(f"training {spec.name} on {cfg.data.dataset} ({len(splits.train)} images)")
        res = fit(
            model,
            splits,
            cfg.train,
            device=device,
            seed=cfg.seed,
            progress=progress,
            checkpoint_dir=training_dir,
            resume=True,
            meta={"data": data_meta},
        )
        model.rc_training = {**training_summary(res), "config": cfg.train.model_dump()}  # noqa: B010  picked up in the artifact's meta
        return model

    baseline = cache.get_or_make(key, train_baseline, "baseline")
    shutil.rmtree(training_dir, ignore_errors=True)
    ctx = StageContext(
        data=splits,
        device=device,
        seed=cfg.seed,
        train=cfg.train,
        workdir=out,
        parent=baseline,
        log=exp_log,
        progress=progress,
    )
    steps = [Step("baseline", baseline, key), *apply_stages(baseline, stages, ctx, cache=cache, key=key)]

    baseline_metrics: dict[str, Any] | None = None
    for step, label in _evaluated(cfg, steps):
        ectx = EvalContext(
            data=splits,
            device=device,
            seed=cfg.seed,
            parent=baseline if label != "baseline" else None,
            baseline_metrics=baseline_metrics,
            workdir=result.folder,
            log=exp_log,
        )
        record = store.record(cfg.name, label, step.key)
        metrics = run_evaluations(step.model, evaluations, ectx, store=record, label=label)
        result.metrics[label] = metrics
        result.artifacts[label] = str(cache.path(step.key))
        if label == "baseline":
            baseline_metrics = metrics
    _write_json(
        result.folder / "metrics.json",
        {
            "experiment": cfg.name,
            "config": cfg.model_dump(),
            "models": result.metrics,
            "artifacts": result.artifacts,
        },
    )
    return result


def require_study(cfg: ExperimentConfig, source: str = "the config") -> None:
    """Refuse a config that names no dataset or no model, rather than run a default experiment."""
    missing = []
    if "data" not in cfg.model_fields_set or "dataset" not in cfg.data.model_fields_set:
        missing.append('[data] dataset = "..."')
    named = {"name", "checkpoint"} & cfg.model.model_fields_set
    if "model" not in cfg.model_fields_set or not named:
        missing.append('[model] name = "..." (or checkpoint = "FOLDER")')
    if missing:
        raise ConfigError(
            f"{source} does not say what to run: it needs {' and '.join(missing)} (usually also [train], "
            "[[evaluations]] and [[recipes]]); start from a copy of the demo config, "
            "robustcompress/configs/demo.toml"
        )


def baseline_key(cfg: ExperimentConfig, spec: ModelSpec, given: GivenModel | None = None) -> str:
    """The artifact key of an experiment's baseline: data, model, training and seed; for a model the
    config gives, data and the given file's content hash (with the seed when a new head is drawn)."""
    if given is not None:
        seed = {"seed": cfg.seed} if cfg.model.replace_head else {}
        return digest({"data": _data_meta(cfg), **given.key_dict(), **seed})
    return digest(
        {"data": _data_meta(cfg), "model": spec.to_dict(), "train": cfg.train.key_dict(), "seed": cfg.seed}
    )


def _evaluated(cfg: ExperimentConfig, steps: list[Step]) -> list[tuple[Step, str]]:
    """The models an experiment evaluates, with their store labels: the baseline and the last
    model ("final"), or every model with `evaluate_stages`."""
    chosen = steps if cfg.evaluate_stages else [steps[0]] + ([steps[-1]] if len(steps) > 1 else [])
    return [(s, _label(s, steps)) for s in chosen]


def _label(step: Step, steps: list[Step]) -> str:
    return "final" if step.label != "baseline" and step.key == steps[-1].key else step.label


@dataclass
class PlannedEvaluation:
    type: str
    key: str
    stored: bool  # already in the results store for this artifact


@dataclass
class PlannedArtifact:
    label: str  # the results store's model label: baseline, stage<i>:<type> or final
    stage: str  # "baseline" or the stage type
    key: str
    cached: bool  # a complete checkpoint is in <output>/artifacts/<key>
    evaluations: list[PlannedEvaluation]  # empty for the models the experiment does not evaluate
    given: str | None = None  # the baseline's checkpoint folder or weights file when the config gives one


@dataclass
class PlannedExperiment:
    name: str
    output: str
    artifacts: list[PlannedArtifact]
    evaluations: list[dict[str, str]]  # [{"type": ..., "key": ...}] in config order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(cfg: ExperimentConfig) -> list[PlannedExperiment]:
    """Every grid point of `cfg` with the keys of its models and evaluations and what is already done.

    Trains and evaluates nothing: it reads the dataset's description (the model spec in the
    baseline's key holds its classes and normalisation), the artifact folder and the results store.
    """
    infos: dict[str, Any] = {}
    planned = []
    for point in expand_grid(cfg):
        data_id = json.dumps([point.data.dataset, point.data.root, point.data.download])
        if data_id not in infos:
            infos[data_id] = _load_data(point, info_only=True).info
        info = infos[data_id]
        planned.append(_plan_one(point, _model_spec(point, info), given_model(point, info)))
    return planned


def _plan_one(cfg: ExperimentConfig, spec: ModelSpec, given: GivenModel | None) -> PlannedExperiment:
    out = Path(cfg.output)
    cache = ArtifactCache(out / "artifacts", {})
    db = out / RESULTS_DB
    store = ResultsStore(db, readonly=True) if db.is_file() else None
    evaluations = [(t, evaluation_key(t, c)) for t, c in cfg.validated_evaluations()]
    key = baseline_key(cfg, spec, given)
    steps = [Step("baseline", nn.Identity(), key)]  # keys only: no model is built
    for i, (stage_type, stage_cfg) in enumerate(cfg.validated_stages()):
        key = stage_key(key, stage_type, stage_cfg, cfg.seed)
        steps.append(Step(f"stage{i}:{stage_type}", nn.Identity(), key))
    evaluated = {s.key for s, _ in _evaluated(cfg, steps)}
    artifacts = []
    for s in steps:
        evals = [
            PlannedEvaluation(t, k, store is not None and store.get(s.key, k) is not None)
            for t, k in (evaluations if s.key in evaluated else [])
        ]
        stage = s.label.split(":", 1)[-1]
        source = str(given.path) if given is not None and s is steps[0] else None
        artifacts.append(PlannedArtifact(_label(s, steps), stage, s.key, cache.has(s.key), evals, source))
    return PlannedExperiment(cfg.name, cfg.output, artifacts, [{"type": t, "key": k} for t, k in evaluations])


def _load_data(cfg: ExperimentConfig, info_only: bool = False):
    """The experiment's splits; with `info_only`, one image each (the dataset's description is the same)."""
    d = cfg.data
    limits = (
        {"limit_train": 1, "limit_test": 1, "val_fraction": 0.0}
        if info_only
        else {"limit_train": d.limit_train, "limit_test": d.limit_test, "val_fraction": d.val_fraction}
    )
    return load_dataset(d.dataset, root=d.root, seed=cfg.seed, download=d.download, **limits)


def _model_spec(cfg: ExperimentConfig, info: Any) -> ModelSpec:
    m = cfg.model
    return ModelSpec.for_data(m.name, info, width=m.width, stem=m.stem, options=m.options)


def _data_meta(cfg: ExperimentConfig) -> dict[str, Any]:
    """The data part of the baseline's key and of every artifact's metadata (not the root: it moves)."""
    return {"dataset": cfg.data.dataset, **cfg.data.model_dump(exclude={"dataset", "root", "download"})}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, default=str)


def experiment_folder(name: str) -> str:
    """The folder name of an experiment's outputs under the run's output folder."""
    return "".join(c if c.isalnum() or c in "-_.=,[]" else "_" for c in name)
