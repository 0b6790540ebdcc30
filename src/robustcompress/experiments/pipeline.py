"""The one pipeline: apply stages to a model, run evaluations on a model.

The experiment runner, the `compress`, `evaluate` and `attack` commands and the Python API all go
through these two functions, so a stage or an evaluation behaves the same wherever it is used.
Caching is optional: the runner passes an `ArtifactCache` (models content-addressed by the hash of
the spec that made them) and a results-store record (metrics by artifact and evaluation hash).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from robustcompress.checkpoint import META, load_checkpoint, save_checkpoint
from robustcompress.evaluation.registry import EVALUATIONS, EvalConfig, EvalContext
from robustcompress.experiments.config import expand_presets, parse_typed
from robustcompress.stages import STAGES, StageConfig, StageContext

StageList = Sequence[tuple[str, StageConfig]]
EvaluationList = Sequence[tuple[str, EvalConfig]]


def digest(obj: Any) -> str:
    """A short content hash of a JSON-serialisable spec: every cache key is one."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_key(parent_key: str, stage_type: str, cfg: StageConfig, seed: int) -> str:
    """The artifact key of a stage's output: its parent's key, the stage spec and the seed."""
    return digest({"parent": parent_key, "stage": {"type": stage_type, **cfg.key_dict()}, "seed": seed})


def evaluation_key(eval_type: str, cfg: EvalConfig) -> str:
    """The key of an evaluation spec; metrics are stored per (artifact key, evaluation key)."""
    return digest({"type": eval_type, **cfg.key_dict()})


def parse_stages(entries: Sequence[dict[str, Any]], where: str = "stages") -> list[tuple[str, StageConfig]]:
    """Config entries (`{"type": "prune", ...}`, presets included) -> validated (type, config) pairs."""
    return [parse_typed(e, STAGES, f"{where}[{i}]") for i, e in enumerate(expand_presets(list(entries)))]


def parse_evaluations(
    entries: Sequence[dict[str, Any]], where: str = "evaluations"
) -> list[tuple[str, EvalConfig]]:
    """Config entries (`{"type": "clean"}`, ...) -> validated (type, config) pairs."""
    return [parse_typed(e, EVALUATIONS, f"{where}[{i}]") for i, e in enumerate(entries)]


@dataclass
class Step:
    """One model of a pipeline: the baseline or the output of a stage."""

    label: str  # "baseline" or "stage<i>:<type>"
    model: nn.Module
    key: str | None = None  # artifact key; None when nothing is cached


class ArtifactCache:
    """A folder of checkpoints named by artifact key; a complete one is loaded instead of recomputed."""

    def __init__(self, folder: str | Path, meta: dict[str, Any], log: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.meta = meta  # written into every artifact's metadata (e.g. {"data": ...})
        self.log = log

    def path(self, key: str) -> Path:
        return self.folder / key

    def has(self, key: str) -> bool:
        return (self.path(key) / META).is_file()

    def get_or_make(self, key: str, make: Callable[[], nn.Module], stage: Any) -> nn.Module:
        """The artifact `key`, loaded if complete, else made by `make()` and saved.

        `stage` ("baseline" or the stage spec) goes into the metadata; a model's `rc_training`
        attribute (the baseline's training summary) and `rc_given` (the file it was given as) too.
        """
        folder = self.path(key)
        if self.has(key):
            self.log(f"cached: {key} ({stage if isinstance(stage, str) else stage['type']})")
            return load_checkpoint(folder)[0]
        model = make()
        training = getattr(model, "rc_training", None)
        given = getattr(model, "rc_given", None)  # a baseline the config gave: which file it came from
        extra = {"training": training} if training else {}
        extra.update({"given": given} if given else {})
        save_checkpoint(folder, model, {**self.meta, "stage": stage, **extra})
        return model


def apply_stages(
    model: nn.Module,
    stages: StageList,
    ctx: StageContext,
    *,
    cache: ArtifactCache | None = None,
    key: str | None = None,
    first: int = 0,
) -> list[Step]:
    """Apply `stages` in order to a copy of `model`; returns one Step per stage (input untouched).

    With `cache` (and the input's artifact `key`), each stage's output is loaded if already made.
    `first` numbers the stages from the index of the first one in its recipe (one stage at a time).
    """
    if cache is not None and key is None:
        raise ValueError("apply_stages with a cache needs the input model's artifact key")
    steps: list[Step] = []
    for i, (stage_type, stage_cfg) in enumerate(stages, start=first):
        parent = model

        def make(stage_type=stage_type, stage_cfg=stage_cfg, parent=parent, i=i) -> nn.Module:
            ctx.log(f"stage {i}: {stage_type}")
            start = time.perf_counter()
            made = STAGES.get(stage_type).apply(copy.deepcopy(parent), stage_cfg, ctx)
            ctx.log(f"finished stage {i} ({stage_type}) in {time.perf_counter() - start:.1f} s")
            return made

        if cache is None:
            model = make()
        else:
            key = stage_key(key, stage_type, stage_cfg, ctx.seed)
            model = cache.get_or_make(key, make, {"type": stage_type, **stage_cfg.model_dump()})
        steps.append(Step(f"stage{i}:{stage_type}", model, key if cache is not None else None))
    return steps


class MetricsRecord(Protocol):
    """Where one model's metrics are looked up and kept (see ResultsStore.record)."""

    def get(self, evaluation: str) -> dict[str, Any] | None: ...

    def put(self, evaluation: str, metrics: dict[str, Any]) -> None: ...


def run_evaluations(
    model: nn.Module,
    evaluations: EvaluationList,
    ctx: EvalContext,
    *,
    store: MetricsRecord | None = None,
    label: str = "model",
) -> dict[str, Any]:
    """Run `evaluations` on `model`; returns their metrics merged into one dict, in order.

    With `store`, an evaluation already stored for this model is not rerun, and every result is
    put there as soon as it is known. When the context has a parent model but no baseline metrics,
    the evaluations that need the baseline's metrics are first run on the parent.
    """
    if ctx.parent is not None and ctx.baseline_metrics is None:
        ctx.baseline_metrics = _parent_metrics(ctx.parent, evaluations, ctx)
    metrics: dict[str, Any] = {}
    for eval_type, eval_cfg in evaluations:
        eval_key = evaluation_key(eval_type, eval_cfg)
        stored = store.get(eval_key) if store is not None else None
        if stored is None:
            ctx.log(f"evaluating {label}: {eval_type}")
            start = time.perf_counter()
            stored = EVALUATIONS.get(eval_type).run(model, eval_cfg, ctx)
            ctx.log(f"evaluated {label}: {eval_type} in {time.perf_counter() - start:.1f} s")
        if store is not None:
            store.put(eval_key, stored)
        metrics.update(stored)
    return metrics


def _parent_metrics(
    parent: nn.Module, evaluations: EvaluationList, ctx: EvalContext
) -> dict[str, Any] | None:
    """The parent's metrics of the evaluations that compare with a baseline's (None if none does)."""
    wanted = [(n, cfg) for n, cfg in evaluations if "baseline_metrics" in EVALUATIONS.get(n).needs]
    if not wanted:
        return None
    parent_ctx = EvalContext(data=ctx.data, device=ctx.device, seed=ctx.seed, log=ctx.log)
    return run_evaluations(parent, wanted, parent_ctx, label="parent")
