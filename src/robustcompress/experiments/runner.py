"""Runs experiments: baseline -> stages -> evaluations, with every artifact cached by the hash of its spec.

A grid of recipes trains the shared baseline once; a rerun skips finished artifacts and stored
evaluations; a killed run resumes (the baseline's training from its last epoch checkpoint).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robustcompress.checkpoint import META, load_checkpoint, save_checkpoint
from robustcompress.data import load_dataset
from robustcompress.device import resolve_device
from robustcompress.evaluation.registry import EVALUATIONS, EvalContext
from robustcompress.experiments.config import ExperimentConfig, expand_grid
from robustcompress.experiments.store import RESULTS_DB, ResultsStore
from robustcompress.fileio import atomic_write_json
from robustcompress.models import ModelSpec
from robustcompress.stages import STAGES, StageContext
from robustcompress.training.loop import fit, training_summary


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class ExperimentResult:
    name: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> metrics
    artifacts: dict[str, str] = field(default_factory=dict)  # model label -> artifact folder
    folder: Path | None = None


def digest(obj: Any) -> str:
    """A short content hash of a JSON-serialisable spec."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    out = Path(cfg.output)
    store = store or ResultsStore(out / RESULTS_DB)
    store.add_experiment(cfg.name, cfg.model_dump())
    device = resolve_device(cfg.device)
    stages = cfg.validated_stages()
    evaluations = cfg.validated_evaluations()
    splits = load_dataset(
        cfg.data.dataset,
        root=cfg.data.root,
        val_fraction=cfg.data.val_fraction,
        seed=cfg.seed,
        limit_train=cfg.data.limit_train,
        limit_test=cfg.data.limit_test,
        download=cfg.data.download,
    )
    spec = ModelSpec.for_data(
        cfg.model.name, splits.info, width=cfg.model.width, stem=cfg.model.stem, options=cfg.model.options
    )
    data_meta = {"dataset": cfg.data.dataset, **cfg.data.model_dump(exclude={"dataset", "root", "download"})}
    artifacts = out / "artifacts"
    result = ExperimentResult(cfg.name, folder=out / _safe(cfg.name))

    key = digest(
        {"data": data_meta, "model": spec.to_dict(), "train": cfg.train.key_dict(), "seed": cfg.seed}
    )

    def train_baseline() -> nn.Module:
        model = spec.build(seed=cfg.seed)
        log(f"[{cfg.name}] training {spec.name} on {cfg.data.dataset} ({len(splits.train)} images)")
        res = fit(
            model,
            splits,
            cfg.train,
            device=device,
            seed=cfg.seed,
            progress=progress,
            checkpoint_dir=artifacts / f"{key}.training",
            resume=True,
            meta={"data": data_meta},
        )
        model.rc_training = {**training_summary(res), "config": cfg.train.model_dump()}  # noqa: B010  picked up in the artifact's meta
        return model

    baseline = _cached(artifacts / key, train_baseline, {"data": data_meta, "stage": "baseline"}, log)
    shutil.rmtree(artifacts / f"{key}.training", ignore_errors=True)
    models: list[tuple[str, str, nn.Module]] = [("baseline", key, baseline)]

    model = baseline
    ctx = StageContext(
        data=splits,
        device=device,
        seed=cfg.seed,
        train=cfg.train,
        workdir=out,
        parent=baseline,
        log=lambda m: log(f"[{cfg.name}] {m}"),
        progress=progress,
    )
    for i, (stage_type, stage_cfg) in enumerate(stages):
        key = digest({"parent": key, "stage": {"type": stage_type, **stage_cfg.key_dict()}, "seed": cfg.seed})
        parent_model = model

        def apply_stage(
            stage_type=stage_type, stage_cfg=stage_cfg, parent_model=parent_model, i=i
        ) -> nn.Module:
            log(f"[{cfg.name}] stage {i}: {stage_type}")
            return STAGES.get(stage_type).apply(copy.deepcopy(parent_model), stage_cfg, ctx)

        stage_meta = {"data": data_meta, "stage": {"type": stage_type, **stage_cfg.model_dump()}}
        model = _cached(artifacts / key, apply_stage, stage_meta, log)
        models.append((f"stage{i}:{stage_type}", key, model))

    to_evaluate = models if cfg.evaluate_stages else [models[0]] + ([models[-1]] if len(models) > 1 else [])
    baseline_metrics: dict[str, Any] | None = None
    for label, art_key, mdl in to_evaluate:
        label = "final" if (label != "baseline" and art_key == models[-1][1]) else label
        ectx = EvalContext(
            data=splits,
            device=device,
            seed=cfg.seed,
            parent=baseline if label != "baseline" else None,
            baseline_metrics=baseline_metrics,
            workdir=result.folder,
            log=lambda m: log(f"[{cfg.name}] {m}"),
        )
        metrics: dict[str, Any] = {}
        for eval_type, eval_cfg in evaluations:
            eval_key = digest({"type": eval_type, **eval_cfg.key_dict()})
            stored = store.get(art_key, eval_key)
            if stored is None:
                log(f"[{cfg.name}] evaluating {label}: {eval_type}")
                stored = EVALUATIONS.get(eval_type).run(mdl, eval_cfg, ectx)
            store.add_metrics(cfg.name, label, art_key, eval_key, stored)
            metrics.update(stored)
        result.metrics[label] = metrics
        result.artifacts[label] = str(artifacts / art_key)
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


def _cached(folder: Path, make: Callable[[], nn.Module], meta: dict[str, Any], log) -> nn.Module:
    """Load the artifact in `folder` if complete, else make and save it."""
    if (folder / META).is_file():
        stage = meta["stage"] if isinstance(meta["stage"], str) else meta["stage"]["type"]
        log(f"cached: {folder.name} ({stage})")
        model, _ = load_checkpoint(folder)
        return model
    model = make()
    training = getattr(model, "rc_training", None)
    save_checkpoint(folder, model, {**meta, **({"training": training} if training else {})})
    return model


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, default=str)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=,[]" else "_" for c in name)
