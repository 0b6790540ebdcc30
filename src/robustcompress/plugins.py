"""The modules that register the built-in models, datasets, stages, evaluations, objectives, attacks,
corruptions and checkpoint structures.

Registries fill when these modules are imported. `robustcompress/__init__.py` calls `load_plugins()`,
so importing any `robustcompress.*` module (`load_checkpoint`, `load_config`, `run_experiments`,
`make_attack`, ...) makes every built-in name known, whatever else was or was not imported. A module
that registers something new adds one line here. Listed explicitly: no import magic.
"""

from __future__ import annotations

import importlib

MODULES = [
    "robustcompress.data",
    "robustcompress.models",
    "robustcompress.training",
    "robustcompress.attacks",
    "robustcompress.corruptions",
    "robustcompress.evaluation",
    "robustcompress.evaluation.clean",
    "robustcompress.compression",
    "robustcompress.compression.pruning",
    "robustcompress.compression.presets",
    "robustcompress.evaluation.efficiency",
    "robustcompress.evaluation.corruption",
    "robustcompress.evaluation.size",
    "robustcompress.analysis.evaluation",
    "robustcompress.compression.csam",
    "robustcompress.compression.cram",
    "robustcompress.compression.pruning.hydra",
    "robustcompress.evaluation.certified",
    "robustcompress.training.noise_objectives",
    "robustcompress.compression.compact",
]


def load_plugins() -> None:
    """Import every module of MODULES (cheap after the first call: Python caches modules)."""
    for name in MODULES:
        importlib.import_module(name)
