"""Imports every module that registers stages, evaluations, objectives, attacks or structures.

The registries fill on import; the CLI and the experiment runner call `load_plugins()` once so
that every name a config may use is known. Listed explicitly: no import magic.
"""

from __future__ import annotations

import importlib

MODULES = [
    "robustcompress.training",
    "robustcompress.evaluation.clean",
    "robustcompress.compression",
    "robustcompress.compression.pruning",
    "robustcompress.evaluation.efficiency",
    "robustcompress.evaluation.corruption",
    "robustcompress.evaluation.size",
    "robustcompress.evaluation.certified",
    "robustcompress.training.noise_objectives",
]


def load_plugins() -> None:
    for name in MODULES:
        importlib.import_module(name)
