"""Artifact and evaluation cache keys of the shipped configs stay what they were when they were pinned.

A key that moves makes every finished run recompute its baseline and stages; tests/data/cache_keys.json
holds the keys computed before the architecture change (and before any key-name aliasing).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustcompress.experiments.config import load_config
from robustcompress.experiments.runner import plan

REPO = Path(__file__).resolve().parents[1]
PINNED = json.loads((REPO / "tests" / "data" / "cache_keys.json").read_text())
CONFIGS = sorted((REPO / "configs").glob("*.toml")) + [REPO / "src/robustcompress/configs/demo.toml"]


def keys_of(path: Path) -> dict[str, dict[str, list[str]]]:
    """Every grid point's artifact-key chain (baseline, stages) and evaluation keys, as the runner
    computes them (`plan` shares the runner's key functions)."""
    return {
        f"{path.relative_to(REPO)}::{p.name}": {
            "artifacts": [a.key for a in p.artifacts],
            "evaluations": [e["key"] for e in p.evaluations],
        }
        for p in plan(load_config(path))
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_keys_are_unchanged(path, data_root, monkeypatch):
    monkeypatch.setenv("ROBUSTCOMPRESS_DATA", str(data_root))  # the configs name no data root
    computed = keys_of(path)
    pinned = {name: keys for name, keys in PINNED.items() if name.startswith(f"{path.relative_to(REPO)}::")}
    assert pinned, f"no pinned keys for {path.name}"
    assert computed == pinned
