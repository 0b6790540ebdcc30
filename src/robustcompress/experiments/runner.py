"""Runs a study: the task graph of its grid (graph.py) on an executor, the results store written here.

A grid of recipes trains the shared baseline once; a rerun skips finished artifacts and stored
evaluations; a killed run resumes (the baseline's training from its last epoch checkpoint). The
driver is the one writer of the results store, whichever executor runs the tasks. `plan(cfg)`
computes the same keys without training or evaluating anything (`run --dry-run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustcompress.errors import ConfigError, RobustCompressError
from robustcompress.experiments.config import ExperimentConfig
from robustcompress.experiments.graph import EvalTask, StudyGraph, baseline_key, build_graph
from robustcompress.experiments.latency_phase import run_latency_phase
from robustcompress.experiments.lock import output_lock
from robustcompress.experiments.pipeline import ArtifactCache, digest, evaluation_key
from robustcompress.experiments.store import RESULTS_DB, ResultsStore
from robustcompress.experiments.tasks import experiment_folder, stderr_log
from robustcompress.fileio import atomic_write_json

__all__ = [
    "ExperimentResult",
    "StudyFailed",
    "baseline_key",
    "digest",
    "experiment_folder",
    "plan",
    "require_study",
    "run_experiment",
    "run_experiments",
]


@dataclass
class ExperimentResult:
    name: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # model label -> metrics
    artifacts: dict[str, str] = field(default_factory=dict)  # model label -> artifact folder
    folder: Path | None = None


class StudyFailed(RobustCompressError):
    """Some experiments failed with a user error; the others finished and are stored (`results`)."""

    def __init__(self, message: str, results: list[ExperimentResult]):
        super().__init__(message)
        self.results = results


def run_experiments(
    cfg: ExperimentConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] = stderr_log,
    executor: Any = None,
) -> list[ExperimentResult]:
    """Run every grid point of `cfg` into cfg.output; returns one result per point.

    `executor` (default: the one `[execution]` names) runs the tasks; a task failing with a user
    error fails the experiments that need it, the others finish, then StudyFailed names them.
    """
    from robustcompress.experiments.executors import make_executor

    with output_lock(cfg.output):  # one run per output folder (a second one: FolderInUse, exit 2)
        study = Study(build_graph(cfg), ResultsStore(Path(cfg.output) / RESULTS_DB), cfg.output, log)
        (executor or make_executor(cfg.execution, log)).run(study, progress=progress)
        run_latency_phase(cfg, study.store, log, graph=study.graph, results=study.results.values())
        return study.finish()


def run_experiment(
    cfg: ExperimentConfig,
    *,
    store: ResultsStore | None = None,
    progress: bool = True,
    log: Callable[[str], None] = stderr_log,
) -> ExperimentResult:
    """One experiment (no grid) in this process: baseline, stages, evaluations, all cached by key."""
    from robustcompress.experiments.executors import LocalExecutor

    with output_lock(cfg.output):
        store = store or ResultsStore(Path(cfg.output) / RESULTS_DB)
        study = Study(build_graph(cfg), store, cfg.output, log)
        LocalExecutor(log).run(study, progress=progress)
        run_latency_phase(cfg, store, log, graph=study.graph, results=study.results.values())
        [result] = study.finish()
    return result


class Study:
    """The driver's side of a run: what is left to do, the results store (its only writer) and each
    experiment's result, written to <output>/<experiment>/metrics.json once all its models are evaluated."""

    def __init__(
        self, graph: StudyGraph, store: ResultsStore, output: str | Path, log: Callable[[str], None]
    ):
        self.graph = graph
        self.store = store
        self.out = Path(output)
        self.log = log
        self.metrics: dict[str, dict[str, Any]] = {}  # evaluation task id -> merged metrics
        self.failed: dict[str, str] = {}  # task id -> why (its own error or a failed prerequisite)
        self.errors: list[tuple[str, RobustCompressError]] = []  # (task id, error) of the tasks that raised
        self.results: dict[str, ExperimentResult] = {}
        for name in graph.experiments:
            self.store.add_experiment(name, graph.experiments[name].model_dump())
        cache = ArtifactCache(self.out / "artifacts", {})
        self.todo = [t for t in graph.order if not self._done_already(t, cache)]

    def _done_already(self, task_id: str, cache: ArtifactCache) -> bool:
        """A complete artifact, or an evaluation task whose every evaluation is stored (its rows are
        written for every experiment that asks, as a rerun always did)."""
        task = self.graph.task(task_id)
        if not isinstance(task, EvalTask):
            if cache.has(task.key):
                self.log(f"[{task.experiment}] cached: {task.key} ({task.stage})")
                return True
            return False
        stored = self.stored(task)
        if len(stored) < len(task.evaluation_keys):
            return False
        self.log(f"[{task.experiment}] stored: the evaluations of {task.label} ({task.artifact})")
        self.finish_evaluation(task, stored)
        return True

    def stored(self, task: EvalTask) -> dict[str, dict[str, Any]]:
        """The stored metrics of the task's evaluations, by evaluation key (missing ones left out)."""
        found = {k: self.store.get(task.artifact, k) for k in task.evaluation_keys}
        return {k: m for k, m in found.items() if m is not None}

    def record(self, task: EvalTask) -> Rows:
        return Rows(self.store, task)

    def baseline_metrics(self, task: EvalTask) -> dict[str, Any] | None:
        return self.metrics[task.needs_baseline] if task.needs_baseline else None

    def config(self, task_id: str) -> ExperimentConfig:
        return self.graph.experiments[self.graph.task(task_id).experiment]

    def blocked(self, task_id: str) -> bool:
        """Whether a prerequisite failed; then this task fails too, without running."""
        failed = [d for d in self.graph.task(task_id).deps if d in self.failed]
        if failed:
            self.failed[task_id] = self.failed[failed[0]]
        return bool(failed)

    def fail(self, task_id: str, error: RobustCompressError) -> None:
        names = ", ".join(self.graph.experiments_of(task_id))
        self.log(f"failed: {names}: {error}")
        self.failed[task_id] = str(error)
        self.errors.append((task_id, error))

    def finish_evaluation(
        self, task: EvalTask, per_key: dict[str, dict[str, Any]], rows: Rows | None = None
    ) -> None:
        """Store what a worker computed under every row (what `rows` has not yet), keep the merged metrics."""
        rows = rows or self.record(task)
        merged: dict[str, Any] = {}
        for k in task.evaluation_keys:
            if k not in rows.known:
                rows.put(k, per_key[k])
            merged.update(per_key[k])
        self.metrics[task.id] = merged
        for name in {e for e, _ in task.rows}:
            self._maybe_write(name)

    def _maybe_write(self, name: str) -> None:
        models = self.graph.evaluated(name)
        if name in self.results or any(m.evaluation not in self.metrics for m in models):
            return
        result = ExperimentResult(name, folder=self.out / experiment_folder(name))
        for m in models:
            result.metrics[m.label] = self.metrics[m.evaluation]
            result.artifacts[m.label] = str(self.out / "artifacts" / m.key)
        atomic_write_json(
            result.folder / "metrics.json",
            {
                "experiment": name,
                "config": self.graph.experiments[name].model_dump(),
                "models": result.metrics,
                "artifacts": result.artifacts,
            },
            default=str,
        )
        self.results[name] = result

    def finish(self) -> list[ExperimentResult]:
        """Every experiment's result in grid order; StudyFailed when a task failed."""
        done = [self.results[n] for n in self.graph.experiments if n in self.results]
        if not self.errors:
            return done
        lines = [
            f"experiment {', '.join(self.graph.experiments_of(t))} failed: {error}"
            for t, error in self.errors
        ]
        finished = ", ".join(r.name for r in done) or "none"
        lines.append(f"finished and stored: {finished}; fix the error and rerun (finished work is reused)")
        raise StudyFailed("\n".join(lines), done)


class Rows:
    """The MetricsRecord of an evaluation task: looks up by artifact and writes every metric at once
    under each (experiment, label) that asked, so a killed run keeps each finished evaluation."""

    def __init__(self, store: ResultsStore, task: EvalTask):
        self.store = store
        self.task = task
        self.known: dict[str, dict[str, Any]] = {}  # evaluation key -> metrics, as written

    def get(self, evaluation: str) -> dict[str, Any] | None:
        return self.store.get(self.task.artifact, evaluation)

    def put(self, evaluation: str, metrics: dict[str, Any]) -> None:
        for experiment, label in self.task.rows:
            self.store.record(experiment, label, self.task.artifact).put(evaluation, metrics)
        self.known[evaluation] = metrics


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


def plan(cfg: ExperimentConfig, graph: StudyGraph | None = None) -> list[PlannedExperiment]:
    """Every grid point of `cfg` with the keys of its models and evaluations and what is already done.

    Trains and evaluates nothing: it reads the dataset's description (the model spec in the
    baseline's key holds its classes and normalisation), the artifact folder and the results store.
    """
    graph = graph or build_graph(cfg)
    out = Path(cfg.output)
    cache = ArtifactCache(out / "artifacts", {})
    db = out / RESULTS_DB
    store = ResultsStore(db, readonly=True) if db.is_file() else None
    planned = []
    for name, point in graph.experiments.items():
        evaluations = [(t, evaluation_key(t, c)) for t, c in point.validated_evaluations()]
        given = graph.given[name]
        artifacts = []
        for i, m in enumerate(graph.models[name]):
            evals = [
                PlannedEvaluation(t, k, store is not None and store.get(m.key, k) is not None)
                for t, k in (evaluations if m.evaluation is not None else [])
            ]
            source = str(given.path) if given is not None and i == 0 else None
            artifacts.append(PlannedArtifact(m.label, m.stage, m.key, cache.has(m.key), evals, source))
        planned.append(
            PlannedExperiment(name, point.output, artifacts, [{"type": t, "key": k} for t, k in evaluations])
        )
    return planned
