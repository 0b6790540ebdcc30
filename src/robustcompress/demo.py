"""The main job: the packaged demo config, run through the experiment runner, shown as one table."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from robustcompress.experiments.config import load_config
from robustcompress.experiments.runner import run_experiments
from robustcompress.experiments.store import format_table

COLUMNS = [
    "acc.clean",
    "acc.worst_linf_0.1",
    "mce",
    "params.nonzero",
    "sparsity",
    "size.bytes_compressed",
    "size.ratio",
    "latency.cpu_ms.b64",
]
QUICK = {  # a set-up check in well under a minute: a few hundred images, small attack and corruption samples
    "data.limit_train": 600,
    "data.limit_test": 200,
    "train.epochs": 1,
    "evaluations.1.n_examples": 50,
    "evaluations.2.n_examples": 50,
}


def demo_config_path():
    return resources.files("robustcompress") / "configs" / "demo.toml"


def run_demo(
    data_root: str | None = None,
    out: str = "runs/demo",
    quick: bool = False,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> tuple[str, dict[str, Any]]:
    """Run the demo; returns the printed table and {recipe/model: metrics}."""
    overrides: dict[str, Any] = {"output": out, "device": device, **(QUICK if quick else {})}
    if data_root is not None:
        overrides["data.root"] = str(data_root)
    with resources.as_file(demo_config_path()) as path:
        cfg = load_config(path, overrides)
    results = run_experiments(cfg, log=log)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        recipe = r.name.split("/", 1)[-1]
        label = "final" if "final" in r.metrics else "baseline"
        rows[(recipe, label)] = r.metrics[label]
    table = format_table(rows, [c for c in COLUMNS if any(c in m for m in rows.values())])
    return table, {f"{recipe}/{label}": m for (recipe, label), m in rows.items()}
