"""Reads an output folder's results store into rows a report can show: one row per model.

Recipes of one study share their baseline (the same artifact), so the comparison shows each
baseline once and then every experiment's final model, each compared with its own baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustcompress.experiments.config import import_plugins
from robustcompress.experiments.store import ResultsStore


@dataclass
class ModelRow:
    """The metrics of one model of one experiment ('baseline', 'final' or 'stage<i>:<type>')."""

    experiment: str
    model: str
    artifact: str
    metrics: dict[str, Any]
    label: str = ""  # short display name, set by Results

    @property
    def flags(self) -> dict[str, str]:
        """Raised gradient-masking flags: `flag.*` metrics with a message (or a non-zero value)."""
        return {
            k: str(v) for k, v in self.metrics.items() if k.startswith("flag.") and v not in (None, "", 0)
        }


@dataclass
class Results:
    folder: Path
    rows: list[ModelRow]  # every (experiment, model), experiments in run order
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # experiment -> config

    @property
    def experiments(self) -> list[str]:
        return list(dict.fromkeys(r.experiment for r in self.rows))

    def models_of(self, experiment: str) -> list[ModelRow]:
        return [r for r in self.rows if r.experiment == experiment]

    def baseline_of(self, experiment: str) -> ModelRow | None:
        return next((r for r in self.models_of(experiment) if r.model == "baseline"), None)

    def comparison_rows(self) -> list[ModelRow]:
        """Each distinct baseline once, then every experiment's final model."""
        seen: set[str] = set()
        baselines = []
        for r in self.rows:
            if r.model == "baseline" and r.artifact not in seen:
                seen.add(r.artifact)
                baselines.append(r)
        return baselines + [r for r in self.rows if r.model == "final"]

    def metric_names(self) -> list[str]:
        return sorted({k for r in self.rows for k in r.metrics})


def load_results(folder: str | Path) -> Results:
    """Each experiment's latest run: its config and every model's metrics, read-only."""
    store = ResultsStore.open(folder)
    models = store.models()
    configs = {m.run.experiment: m.run.config for m in models}
    for config in configs.values():  # their evaluations declare what their metrics mean
        import_plugins(config.get("plugins", []))
    models.sort(key=lambda m: (m.run.id, _model_rank(m.model)))
    rows = [ModelRow(m.run.experiment, m.model, m.artifact, m.metrics) for m in models]
    results = Results(Path(folder), rows, configs)
    _set_labels(results)
    return results


def _model_rank(model: str) -> tuple[int, int]:
    if model == "baseline":
        return (0, 0)
    if model == "final":
        return (2, 0)
    index = model.removeprefix("stage").split(":", 1)[0]
    return (1, int(index) if index.isdigit() else 0)


def _set_labels(results: Results) -> None:
    """Short names: the experiments' shared 'study/' prefix is dropped; baselines say whose they are."""
    names = results.experiments
    prefixes = {n.split("/", 1)[0] for n in names if "/" in n}
    strip = len(prefixes) == 1 and all("/" in n for n in names) and len(names) > 1
    short = {n: n.split("/", 1)[1] if strip else n for n in names}
    baseline_artifacts = {r.artifact for r in results.rows if r.model == "baseline"}
    for r in results.rows:
        if r.model == "baseline":
            r.label = "baseline" if len(baseline_artifacts) == 1 else f"{short[r.experiment]} (baseline)"
        elif r.model == "final":
            r.label = short[r.experiment]
        else:
            r.label = f"{short[r.experiment]} ({r.model})"
