"""The work of one task of a study graph, the same code in the driver's process and in a Ray worker.

An artifact task makes one checkpoint in <output>/artifacts/<key> (atomically: `save_checkpoint`);
an evaluation task runs an experiment's evaluations on one artifact and returns their metrics.
Models reach a task only as checkpoints (safetensors + JSON) or, in the local executor, from
memory; a task never receives a pickled model.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from robustcompress.checkpoint import load_checkpoint
from robustcompress.device import resolve_device
from robustcompress.evaluation.registry import EvalContext
from robustcompress.experiments.config import ExperimentConfig
from robustcompress.experiments.given import given_model, load_given
from robustcompress.experiments.graph import ArtifactTask, EvalTask, data_meta, load_data, model_spec
from robustcompress.experiments.pipeline import ArtifactCache, MetricsRecord, apply_stages, run_evaluations
from robustcompress.stages import StageContext
from robustcompress.training.loop import fit, training_summary


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def experiment_folder(name: str) -> str:
    """The folder name of an experiment's outputs under the run's output folder."""
    return "".join(c if c.isalnum() or c in "-_.=,[]" else "_" for c in name)


class Collected:
    """A MetricsRecord in memory: what a worker computed, per evaluation key, for the driver to store."""

    def __init__(self, known: dict[str, dict[str, Any]] | None = None):
        self.known = dict(known or {})

    def get(self, evaluation: str) -> dict[str, Any] | None:
        return self.known.get(evaluation)

    def put(self, evaluation: str, metrics: dict[str, Any]) -> None:
        self.known[evaluation] = metrics


class Workspace:
    """What the tasks of one output folder share in one process: the data splits (the last one
    loaded) and, with `keep_models`, the models made or loaded (else each is read from its checkpoint)."""

    def __init__(
        self,
        output: str | Path,
        *,
        progress: bool = True,
        log: Callable[[str], None] = stderr_log,
        keep_models: bool = True,
    ):
        self.out = Path(output)
        self.progress = progress
        self.log = log
        self.keep_models = keep_models
        self.models: dict[str, nn.Module] = {}
        self._splits: tuple[str, Any] | None = None

    def splits(self, cfg: ExperimentConfig) -> Any:
        data_id = json.dumps([cfg.data.model_dump(), cfg.seed], sort_keys=True)
        if self._splits is None or self._splits[0] != data_id:
            self._splits = (data_id, load_data(cfg))
        return self._splits[1]

    def model(self, key: str) -> nn.Module:
        if key in self.models:
            return self.models[key]
        model = load_checkpoint(self.out / "artifacts" / key)[0]
        if self.keep_models:
            self.models[key] = model
        return model

    def release(self, key: str) -> None:
        self.models.pop(key, None)

    def make_artifact(self, cfg: ExperimentConfig, task: ArtifactTask) -> None:
        """Make (or load, when complete) the artifact of `task` with `cfg`'s settings."""
        log = _prefixed(self.log, cfg.name)
        cache = ArtifactCache(self.out / "artifacts", {"data": data_meta(cfg)}, log)
        if task.parent is None:
            model = self._baseline(cfg, task, cache, log)
        else:
            stage = cfg.validated_stages()[task.index]
            ctx = StageContext(
                data=self.splits(cfg),
                device=resolve_device(cfg.device),
                seed=cfg.seed,
                train=cfg.train,
                workdir=self.out,
                parent=self.model(task.baseline),
                log=log,
                progress=self.progress,
            )
            parent = self.model(task.parent)
            [step] = apply_stages(parent, [stage], ctx, cache=cache, key=task.parent, first=task.index)
            model = step.model
        if self.keep_models:
            self.models[task.key] = model

    def _baseline(self, cfg: ExperimentConfig, task: ArtifactTask, cache: ArtifactCache, log) -> nn.Module:
        splits = self.splits(cfg)
        given = given_model(cfg, splits.info)
        training_dir = cache.path(f"{task.key}.training")

        def train() -> nn.Module:
            if given is not None:  # the user's model is the baseline: nothing is trained
                log(f"baseline: the {given.kind} {given.path}")
                return load_given(given, cfg, splits.info)
            spec = model_spec(cfg, splits.info)
            model = spec.build(seed=cfg.seed)
            log(f"training {spec.name} on {cfg.data.dataset} ({len(splits.train)} images)")
            res = fit(
                model,
                splits,
                cfg.train,
                device=resolve_device(cfg.device),
                seed=cfg.seed,
                progress=self.progress,
                checkpoint_dir=training_dir,
                resume=True,
                meta={"data": data_meta(cfg)},
            )
            model.rc_training = {**training_summary(res), "config": cfg.train.model_dump()}  # noqa: B010  picked up in the artifact's meta
            log(f"trained {spec.name} in {res.seconds:.1f} s")
            return model

        model = cache.get_or_make(task.key, train, "baseline")
        shutil.rmtree(training_dir, ignore_errors=True)
        return model

    def evaluate(
        self,
        cfg: ExperimentConfig,
        task: EvalTask,
        record: MetricsRecord,
        baseline_metrics: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Run `cfg`'s evaluations on the task's artifact (those `record` holds are not rerun)."""
        compressed = task.label != "baseline"
        ctx = EvalContext(
            data=self.splits(cfg),
            device=resolve_device(cfg.device),
            seed=cfg.seed,
            parent=self.model(task.baseline) if compressed else None,
            baseline_metrics=baseline_metrics if compressed else None,
            workdir=self.out / experiment_folder(cfg.name),
            log=_prefixed(self.log, cfg.name),
            latency_phase=True,  # timed by the driver once the graph ran (latency_phase.py)
        )
        model = self.model(task.artifact)
        return run_evaluations(model, cfg.validated_evaluations(), ctx, store=record, label=task.label)


def _prefixed(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda m: log(f"[{name}] {m}")
