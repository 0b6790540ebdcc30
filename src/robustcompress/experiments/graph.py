"""A study as a graph of tasks, each unit of work once, whichever executor runs it.

Artifact tasks (a baseline, each stage output) are keyed by their content hash, so a baseline or a
stage prefix that several recipes share (the prune step of P, PC, PQAT, PCQAT) is one task.
Evaluation tasks run an experiment's evaluation list on one model; the same list on the same
artifact is one task whose metrics are stored under every (experiment, model label) that asked.
The local and the Ray executor both run this graph, so what is computed and stored cannot differ;
`run --dry-run` reads its size and parallel width from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from robustcompress.data import load_dataset
from robustcompress.evaluation.registry import EVALUATIONS
from robustcompress.experiments.config import ExperimentConfig, expand_grid
from robustcompress.experiments.given import GivenModel, given_model
from robustcompress.experiments.pipeline import digest, evaluation_key, stage_key
from robustcompress.models import ModelSpec


@dataclass(frozen=True)
class ArtifactTask:
    """Make one artifact: train (or take) the baseline, or apply one stage to its parent."""

    key: str
    experiment: str  # the first experiment whose chain holds it: its config says how to make it
    index: int  # the stage's index in that experiment's stages; -1 for the baseline
    stage: str  # "baseline" or the stage type
    parent: str | None  # the parent artifact's key (None for the baseline)
    baseline: str  # the key of the chain's baseline (a stage's `ctx.parent`)

    @property
    def id(self) -> str:
        return f"artifact:{self.key}"

    @property
    def deps(self) -> tuple[str, ...]:
        return (f"artifact:{self.parent}",) if self.parent else ()


@dataclass
class EvalTask:
    """Run one evaluation list on one artifact; its metrics go to every row (experiment, label)."""

    id: str
    artifact: str
    baseline: str  # the baseline's key: the parent model of the evaluations of a compressed model
    experiment: str  # the first experiment that asks: its config and folder are used
    label: str
    evaluation_keys: tuple[str, ...]
    needs_baseline: str | None  # the baseline's evaluation task, when an evaluation needs its metrics
    rows: list[tuple[str, str]] = field(default_factory=list)

    @property
    def deps(self) -> tuple[str, ...]:
        parent = (f"artifact:{self.baseline}",) if self.label != "baseline" else ()
        after = (self.needs_baseline,) if self.needs_baseline else ()
        return (f"artifact:{self.artifact}", *parent, *after)


@dataclass(frozen=True)
class Model:
    """One model of one experiment: its label, artifact, and evaluation task (None: not evaluated)."""

    label: str  # baseline, stage<i>:<type> or final
    stage: str  # "baseline" or the stage type
    key: str
    evaluation: str | None


@dataclass
class StudyGraph:
    experiments: dict[str, ExperimentConfig]  # grid order
    models: dict[str, list[Model]]  # per experiment: its baseline and every stage output, in order
    given: dict[str, GivenModel | None]
    artifacts: dict[str, ArtifactTask] = field(default_factory=dict)
    evaluations: dict[str, EvalTask] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # task ids, topologically sorted

    def task(self, task_id: str) -> ArtifactTask | EvalTask:
        kind, _, rest = task_id.partition(":")
        return self.artifacts[rest] if kind == "artifact" else self.evaluations[task_id]

    def evaluated(self, experiment: str) -> list[Model]:
        return [m for m in self.models[experiment] if m.evaluation is not None]

    def experiments_of(self, task_id: str) -> list[str]:
        """The experiments that need a task (directly or through a task that depends on it)."""
        users = {task_id}
        for tid in self.order[self.order.index(task_id) :]:
            if any(d in users for d in self.task(tid).deps):
                users.add(tid)
        evals = [self.evaluations[t] for t in users if t in self.evaluations]
        names = {e for t in evals for e, _ in t.rows}
        return [n for n in self.experiments if n in names]

    def shape(self) -> dict[str, int]:
        """Task counts, the longest chain (in tasks) and the parallel width: the most tasks of one
        level (tasks whose longest chain of prerequisites is equally long), all runnable at once."""
        level: dict[str, int] = {}
        for tid in self.order:
            level[tid] = 1 + max((level[d] for d in self.task(tid).deps), default=0)
        counts: dict[int, int] = {}
        for n in level.values():
            counts[n] = counts.get(n, 0) + 1
        return {
            "tasks": len(self.order),
            "artifacts": len(self.artifacts),
            "evaluations": len(self.evaluations),
            "depth": max(counts, default=0),
            "width": max(counts.values(), default=0),
        }


def build_graph(cfg: ExperimentConfig) -> StudyGraph:
    """The task graph of every grid point of `cfg`. Reads only the datasets' descriptions and the
    files a config gives (for their content hash); trains and evaluates nothing."""
    points = expand_grid(cfg)
    graph = StudyGraph({p.name: p for p in points}, {}, {})
    infos: dict[str, Any] = {}
    for point in points:
        data_id = json.dumps([point.data.dataset, point.data.root, point.data.download])
        if data_id not in infos:
            infos[data_id] = load_data(point, info_only=True).info
        info = infos[data_id]
        given = given_model(point, info)
        graph.given[point.name] = given
        _add_experiment(graph, point, model_spec(point, info), given)
    return graph


def _add_experiment(
    graph: StudyGraph, cfg: ExperimentConfig, spec: ModelSpec, given: GivenModel | None
) -> None:
    base = baseline_key(cfg, spec, given)
    chain = [ArtifactTask(base, cfg.name, -1, "baseline", None, base)]
    for i, (stage_type, stage_cfg) in enumerate(cfg.validated_stages()):
        key = stage_key(chain[-1].key, stage_type, stage_cfg, cfg.seed)
        chain.append(ArtifactTask(key, cfg.name, i, stage_type, chain[-1].key, base))
    for a in chain:
        if a.key not in graph.artifacts:
            graph.artifacts[a.key] = a
            graph.order.append(a.id)

    evaluations = cfg.validated_evaluations()
    eval_keys = tuple(evaluation_key(t, c) for t, c in evaluations)
    compares = any("baseline_metrics" in EVALUATIONS.get(t).needs for t, _ in evaluations)
    labels = evaluated_labels(cfg, [a.key for a in chain])
    models = []
    for i, a in enumerate(chain):
        label = labels.get(i, f"stage{a.index}:{a.stage}")
        task_id = None
        if i in labels:
            task_id = f"eval:{digest([a.key, eval_keys])}"
            task = graph.evaluations.get(task_id)
            if task is None:
                after = f"eval:{digest([base, eval_keys])}" if compares and label != "baseline" else None
                task = EvalTask(task_id, a.key, base, cfg.name, label, eval_keys, after)
                graph.evaluations[task_id] = task
                graph.order.append(task_id)
            task.rows.append((cfg.name, label))
        models.append(Model(label, a.stage, a.key, task_id))
    graph.models[cfg.name] = models


def evaluated_labels(cfg: ExperimentConfig, keys: list[str]) -> dict[int, str]:
    """{chain index: store label} of the models an experiment evaluates: the baseline and the last
    model ("final"), or every model with `evaluate_stages`."""
    chosen = range(len(keys)) if cfg.evaluate_stages else sorted({0, len(keys) - 1})
    stages = cfg.validated_stages()
    out = {}
    for i in chosen:
        if i == 0:
            out[i] = "baseline"
        elif keys[i] == keys[-1]:
            out[i] = "final"
        else:
            out[i] = f"stage{i - 1}:{stages[i - 1][0]}"
    return out


def baseline_key(cfg: ExperimentConfig, spec: ModelSpec, given: GivenModel | None = None) -> str:
    """The artifact key of an experiment's baseline: data, model, training and seed; for a model the
    config gives, data and the given file's content hash (with the seed when a new head is drawn)."""
    if given is not None:
        seed = {"seed": cfg.seed} if cfg.model.replace_head else {}
        return digest({"data": data_meta(cfg), **given.key_dict(), **seed})
    return digest(
        {"data": data_meta(cfg), "model": spec.to_dict(), "train": cfg.train.key_dict(), "seed": cfg.seed}
    )


def load_data(cfg: ExperimentConfig, info_only: bool = False):
    """The experiment's splits; with `info_only`, one image each (the dataset's description is the same)."""
    d = cfg.data
    limits = (
        {"limit_train": 1, "limit_test": 1, "val_fraction": 0.0}
        if info_only
        else {"limit_train": d.limit_train, "limit_test": d.limit_test, "val_fraction": d.val_fraction}
    )
    return load_dataset(d.dataset, root=d.root, seed=cfg.seed, download=d.download, **limits)


def model_spec(cfg: ExperimentConfig, info: Any) -> ModelSpec:
    m = cfg.model
    return ModelSpec.for_data(m.name, info, width=m.width, stem=m.stem, options=m.options)


def data_meta(cfg: ExperimentConfig) -> dict[str, Any]:
    """The data part of the baseline's key and of every artifact's metadata (not the root: it moves)."""
    return {"dataset": cfg.data.dataset, **cfg.data.model_dump(exclude={"dataset", "root", "download"})}
