"""The latency phase of a study: every evaluated model timed after the whole graph ran.

Timed inside each experiment, a latency measures the experiment's neighbours too (other workers,
other tasks on the node). So evaluation tasks store everything but latency (`EvalContext.
latency_phase`), and the driver, once the executor is done and nothing else of the study runs,
times each baseline together with every model compressed from it, interleaved round by round
(evaluation/latency.py). It stores the efficiency evaluation's `latency.*` names, `<name>.iqr`,
`<name>.ratio` (to the baseline) and `flag.<name>` (empty unless the two cannot be ranked) under an
evaluation key of its own, so a rerun finds them and times nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcompress.checkpoint import load_checkpoint
from robustcompress.evaluation.latency import compared_latency
from robustcompress.experiments.config import ExperimentConfig
from robustcompress.experiments.graph import StudyGraph, build_graph, load_data
from robustcompress.experiments.pipeline import ArtifactCache, digest
from robustcompress.experiments.store import ResultsStore
from robustcompress.experiments.tasks import stderr_log
from robustcompress.fileio import atomic_write_json

SETTINGS = ("batch_sizes", "repeats", "warmup", "threads", "runtimes")


@dataclass
class Group:
    """A baseline and the models compressed from it, timed together with the same settings."""

    key: str  # the evaluation key the phase stores its metrics under
    baseline: str  # the baseline's artifact key: the reference of every ratio
    settings: dict[str, Any]
    config: ExperimentConfig  # the first experiment of the group: its data gives the input shape
    rows: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # artifact -> (experiment, label)


def latency_settings(cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The timing settings of the experiment's first efficiency evaluation that asks for latency."""
    for eval_type, eval_cfg in cfg.validated_evaluations():
        if eval_type == "efficiency" and eval_cfg.latency:
            return {k: getattr(eval_cfg, k) for k in SETTINGS}
    return None


def phase_key(settings: dict[str, Any]) -> str:
    return "latency-phase:" + digest(settings)


def run_latency_phase(
    cfg: ExperimentConfig,
    store: ResultsStore,
    log: Callable[[str], None] = stderr_log,
    *,
    graph: StudyGraph | None = None,
    results: Iterable[Any] = (),
) -> dict[tuple[str, str], dict[str, Any]]:
    """Time every evaluated model of `cfg`'s study whose artifact exists; store and return the metrics
    by (experiment, model label). `results` (the runner's ExperimentResults) get them too, in memory
    and in their metrics.json."""
    graph = graph or build_graph(cfg)
    out = Path(cfg.output)
    cache = ArtifactCache(out / "artifacts", {})
    groups: dict[tuple[str, str], Group] = {}
    for name, point in graph.experiments.items():
        settings = latency_settings(point)
        if settings is None:
            continue
        baseline = graph.models[name][0].key
        key = phase_key(settings)
        group = groups.setdefault((baseline, key), Group(key, baseline, settings, point))
        for m in graph.evaluated(name):
            if cache.has(m.key):
                group.rows.setdefault(m.key, []).append((name, m.label))
    measured: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups.values():
        if group.baseline not in group.rows:
            continue  # the baseline failed: nothing to compare with
        per_artifact = _stored(group, store) or _measure(group, out, log)
        for artifact, rows in group.rows.items():
            for experiment, label in rows:
                store.record(experiment, label, artifact).put(group.key, per_artifact[artifact])
                measured[(experiment, label)] = per_artifact[artifact]
    _update_results(results, measured)
    return measured


def _stored(group: Group, store: ResultsStore) -> dict[str, dict[str, Any]] | None:
    """The group's metrics when every one of its models has them stored (None: time them again)."""
    found = {a: store.get(a, group.key) for a in group.rows}
    return None if any(m is None for m in found.values()) else found  # type: ignore[return-value]


def _measure(group: Group, out: Path, log: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    s = group.settings
    others = [a for a in group.rows if a != group.baseline]
    order = [group.baseline, *others]
    log(
        f"latency: timing baseline {group.baseline[:10]} and {len(others)} model(s) of it, interleaved, "
        f"{s['repeats']} rounds at batch {', '.join(map(str, s['batch_sizes']))}"
    )
    models = {a: load_checkpoint(out / "artifacts" / a)[0] for a in order}
    shape = load_data(group.config, info_only=True).info.image_shape
    metrics = compared_latency(
        models,
        shape,
        batch_sizes=s["batch_sizes"],
        runtimes=s["runtimes"],
        rounds=s["repeats"],
        warmup=s["warmup"],
        threads=s["threads"],
        reference=group.baseline,
    )
    for m in metrics.values():  # a remeasured model loses a flag it no longer deserves
        for name in [n for n in m if n.endswith(".ratio")]:
            m.setdefault("flag." + name.removesuffix(".ratio"), "")
    for a in others:
        flags = [n for n, v in metrics[a].items() if n.startswith("flag.") and v]
        rows = ", ".join(f"{e}/{label}" for e, label in group.rows[a])
        ratios = [f"{n[:-6]} x{v:.2f}" for n, v in metrics[a].items() if n.endswith(".ratio")]
        unsure = f" ({len(flags)} not rankable)" if flags else ""
        log(f"latency: {rows}: {', '.join(ratios)} of the baseline{unsure}")
    return metrics


def _update_results(results: Iterable[Any], measured: dict[tuple[str, str], dict[str, Any]]) -> None:
    for result in results:
        for label, metrics in result.metrics.items():
            metrics.update(measured.get((result.name, label), {}))
        path = Path(result.folder) / "metrics.json" if result.folder is not None else None
        if path is not None and path.is_file():
            written = json.loads(path.read_text())
            written["models"] = result.metrics
            atomic_write_json(path, written, default=str)
