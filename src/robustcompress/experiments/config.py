"""The experiment config (TOML): data, model, training, ordered stages, evaluations, and a grid.

Every section is validated; a bad key, type or value raises a ConfigError naming the key and the
allowed values. Stages and evaluations are validated against their registered configs.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robustcompress.compression.presets import expand_presets
from robustcompress.config_base import StrictConfig
from robustcompress.errors import ConfigError
from robustcompress.evaluation.registry import EVALUATIONS
from robustcompress.stages import STAGES
from robustcompress.training.config import TrainConfig


class DataConfig(StrictConfig):
    dataset: str = "fashion-mnist"
    root: str | None = None
    val_fraction: float = Field(0.1, ge=0, lt=1)
    limit_train: int | None = Field(None, ge=1)
    limit_test: int | None = Field(None, ge=1)
    download: bool = False


class ModelConfig(StrictConfig):
    """The architecture, and optionally a model you have: then it is the baseline, not trained here."""

    name: str = "cnn8"
    width: float = Field(1.0, gt=0)
    stem: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(
        None, description="a robustcompress checkpoint folder: the baseline (its own architecture)"
    )
    weights: str | None = Field(
        None, description="trained weights of `name` (.safetensors or a .pth state dict): the baseline"
    )
    normalize: str | list[list[float]] = Field(
        "none",
        description="with `weights`: what the network was trained on, as `robustcompress import "
        "--normalize`: none, dataset, 'M1,..,S1,..' or [[means], [stds]]",
    )
    replace_head: bool = Field(
        False, description="with `weights`: a new classifier head when the weights have another class count"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.checkpoint is not None and self.weights is not None:
            raise ValueError(
                "give either checkpoint (a robustcompress checkpoint folder) or weights (a weights file "
                "of `name`), not both"
            )
        if self.weights is None and (self.normalize != "none" or self.replace_head):
            raise ValueError("normalize and replace_head describe `weights`; give [model] weights = PATH")
        if self.checkpoint is not None:
            defaults = {"width": 1.0, "stem": None, "options": {}}
            changed = [k for k, v in defaults.items() if getattr(self, k) != v]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} cannot be set with checkpoint: the checkpoint's own architecture "
                    "is used; remove them"
                )
        if self.weights is not None and self.options:
            raise ValueError(
                "options cannot be combined with weights (import builds the architecture from name, "
                "width and stem); make a factory 'package.module:factory' that fixes the options"
            )
        return self

    @property
    def given(self) -> str | None:
        """The file of a model the user gives (checkpoint folder or weights), else None (trained here)."""
        return self.checkpoint or self.weights


class RecipeConfig(StrictConfig):
    """A named stage list; several recipes share one baseline (trained once)."""

    name: str
    stages: list[dict[str, Any]] = Field(default_factory=list)


class ExecutionConfig(StrictConfig):
    """Where a study's tasks run; how results are computed never depends on it (no cache key holds it)."""

    executor: Literal["local", "ray"] = Field(
        "local", description="local: one task at a time in this process; ray: tasks on a Ray cluster"
    )
    address: str | None = Field(
        None, description="a running Ray cluster (host:port, ray://host:port or auto); none: a local instance"
    )
    workers: int | None = Field(
        None, ge=1, description="tasks at once (ray; default: as many as the cluster's CPUs allow)"
    )
    cpus: float = Field(1.0, gt=0, description="CPUs per task (ray); each task runs that many torch threads")
    gpus: float = Field(0.0, ge=0, description="GPUs per task (ray)")
    max_retries: int = Field(3, ge=0, description="reruns of a task whose worker died (ray)")
    dashboard: bool = Field(False, description="start the Ray dashboard of a local instance (on 127.0.0.1)")


class ExperimentConfig(StrictConfig):
    name: str = "experiment"
    seed: int = 0
    device: str = "auto"
    output: str = "runs"
    evaluate_stages: bool = Field(False, description="also evaluate every intermediate stage")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    evaluations: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "clean"}])
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    recipes: list[RecipeConfig] = Field(default_factory=list)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    plugins: list[str] = Field(
        default_factory=list,
        description="modules imported before anything else is read: your own stages, evaluations, "
        "objectives, attacks (each registers itself on import)",
    )

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        try:
            import_plugins(modules)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return modules

    def validated_stages(self) -> list[tuple[str, Any]]:
        return [
            parse_typed(entry, STAGES, f"stages[{i}]") for i, entry in enumerate(expand_presets(self.stages))
        ]

    def validated_evaluations(self) -> list[tuple[str, Any]]:
        return [
            parse_typed(entry, EVALUATIONS, f"evaluations[{i}]") for i, entry in enumerate(self.evaluations)
        ]


def import_plugins(modules: list[str]) -> None:
    """Import a config's plugin modules (they register their stages, evaluations ... on import)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(
                f"plugin module {name!r} cannot be imported ({exc}); give a dotted module name "
                "and put its folder on PYTHONPATH (or install it)"
            ) from None


def parse_typed(entry: dict[str, Any], registry, where: str) -> tuple[str, Any]:
    if not isinstance(entry, dict) or "type" not in entry:
        raise ConfigError(f"{where} needs a 'type' key; choose one of: {', '.join(registry.names())}")
    body = {k: v for k, v in entry.items() if k != "type"}
    definition = registry.get(entry["type"])
    return entry["type"], definition.config_cls.parse(body, where=f"{where} ({entry['type']})")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    cfg = ExperimentConfig.parse(raw)
    for cfg_i in expand_grid(cfg):  # validate every stage and evaluation of every grid point now
        cfg_i.validated_stages()
        cfg_i.validated_evaluations()
    return cfg


def expand_grid(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per recipe and grid point (the cartesian product of `grid`'s dotted keys)."""
    if cfg.recipes:
        base = _dump(cfg)
        base.pop("recipes")
        points = []
        for recipe in cfg.recipes:
            raw = {**copy.deepcopy(base), "name": f"{cfg.name}/{recipe.name}", "stages": recipe.stages}
            points.extend(expand_grid(ExperimentConfig.parse(raw, where=f"recipes ({recipe.name})")))
        return points
    if not cfg.grid:
        return [cfg]
    keys = sorted(cfg.grid)
    base = _dump(cfg)
    base.pop("grid")
    base.pop("recipes")
    out = []
    for values in itertools.product(*(cfg.grid[k] for k in keys)):
        raw = copy.deepcopy(base)
        for key, value in zip(keys, values):
            set_dotted(raw, key, value)
        suffix = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in zip(keys, values))
        raw["name"] = f"{cfg.name}[{suffix}]"
        out.append(ExperimentConfig.parse(raw, where="grid"))
    return out


def _dump(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as raw TOML data; [model] keeps only the keys given (a checkpoint's architecture
    is checked against `name` only where the user wrote one)."""
    return {**cfg.model_dump(), "model": cfg.model.model_dump(exclude_unset=True)}


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set raw['a']['b'][0]['c'] from 'a.b.0.c'; refuses paths that do not exist in the config."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"grid/override key {key!r}: {'.'.join(parts[: i + 1])} is not an index of the list"
                )
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"grid/override key {key!r}: {last} is not an index of the list")
        node[int(last)] = value
    else:
        node[last] = value


def _short(value: Any) -> str:
    return str(value) if not isinstance(value, dict | list) else "…"
