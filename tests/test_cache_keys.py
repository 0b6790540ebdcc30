"""Artifact and evaluation cache keys of the shipped configs stay what they were when they were pinned.

A key that moves makes every finished run recompute its baseline and stages; tests/data/cache_keys.json
holds the keys computed before the architecture change (and before any key-name aliasing).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustcompress.data import load_dataset
from robustcompress.experiments.config import expand_grid, load_config
from robustcompress.experiments.runner import digest
from robustcompress.models import ModelSpec

REPO = Path(__file__).resolve().parents[1]
PINNED = json.loads((REPO / "tests" / "data" / "cache_keys.json").read_text())
CONFIGS = sorted((REPO / "configs").glob("*.toml")) + [REPO / "src/robustcompress/configs/demo.toml"]


def keys_of(path: Path, data_root: Path) -> dict[str, dict[str, list[str]]]:
    """Every grid point's artifact-key chain (baseline, stages) and evaluation keys."""
    out = {}
    infos = {}
    for point in expand_grid(load_config(path)):
        dataset = point.data.dataset
        if dataset not in infos:
            infos[dataset] = load_dataset(dataset, root=data_root, limit_train=100, limit_test=100).info
        spec = ModelSpec.for_data(
            point.model.name, infos[dataset], width=point.model.width, stem=point.model.stem,
            options=point.model.options,
        )  # fmt: skip
        data_meta = {"dataset": dataset, **point.data.model_dump(exclude={"dataset", "root", "download"})}
        key = digest(
            {"data": data_meta, "model": spec.to_dict(), "train": point.train.key_dict(), "seed": point.seed}
        )
        chain = [key]
        for stage_type, stage_cfg in point.validated_stages():
            key = digest(
                {"parent": key, "stage": {"type": stage_type, **stage_cfg.key_dict()}, "seed": point.seed}
            )
            chain.append(key)
        evals = [digest({"type": t, **c.key_dict()}) for t, c in point.validated_evaluations()]
        out[f"{path.relative_to(REPO)}::{point.name}"] = {"artifacts": chain, "evaluations": evals}
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_keys_are_unchanged(path, data_root):
    computed = keys_of(path, data_root)
    pinned = {name: keys for name, keys in PINNED.items() if name.startswith(f"{path.relative_to(REPO)}::")}
    assert pinned, f"no pinned keys for {path.name}"
    assert computed == pinned
