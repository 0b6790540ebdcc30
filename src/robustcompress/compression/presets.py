"""Named compression recipes: ordered stage lists, including paper 000's 16 configurations.

Paper 000 (arXiv 2512.24971) compares 16 configurations on CIFAR-10/100; its training budget is
the default here: Adam, at most 30 epochs with early stopping (patience 5) after each compression
step, and no early stopping while pruning. Its pipeline order: prune -> cluster -> QAT -> int8.
The paper does not give the sparsity; 50% is used (tfmot's usual target). `preset_stages`
returns a copy with a smaller budget or other strengths for quick runs and benchmarks.
"""

from __future__ import annotations

import copy
from typing import Any

from robustcompress.errors import ConfigError

EPOCHS = 30
PATIENCE = 5
LR = 1e-4  # fine-tuning learning rate for Adam (the paper gives none)

_PRUNE = [
    {"type": "prune", "method": "global", "amount": 0.5},
    # paper 000: no early stopping during pruning, the full budget is trained
    {"type": "finetune", "epochs": EPOCHS, "objective": "ce", "optimizer": "adam", "lr": LR},
]
_CLUSTER = {
    "type": "cluster",
    "clusters": 16,
    "preserve_sparsity": False,
    "epochs": EPOCHS,
    "lr": LR,
    "patience": PATIENCE,
}
_SP_CLUSTER = {**_CLUSTER, "preserve_sparsity": True}
_QAT = {"type": "qat", "bits": 8, "epochs": EPOCHS, "lr": LR, "patience": PATIENCE}
_INT8 = {"type": "int8"}

PAPER000: list[str] = [
    "ptq",
    "int8",
    "prune",
    "prune-int8",
    "cluster",
    "cluster-int8",
    "sp-cluster",
    "sp-cluster-int8",
    "qat",
    "qat-int8",
    "cqat",
    "cqat-int8",
    "pqat",
    "pqat-int8",
    "pcqat",
    "pcqat-int8",
]
"""Paper 000's configurations #1..#16, in its numbering order."""

_BASE: dict[str, list[dict[str, Any]]] = {
    "ptq": [{"type": "ptq", "bits": 8}],  # post-training quantization, simulated int8
    "int8": [],  # post-training quantization straight to a real int8 model
    "prune": _PRUNE,
    "cluster": [_CLUSTER],
    "sp-cluster": [*_PRUNE, _SP_CLUSTER],  # sparsity-preserving clustering of a pruned model
    "qat": [_QAT],
    "cqat": [_CLUSTER, _QAT],  # cluster-preserving QAT
    "pqat": [*_PRUNE, _QAT],  # sparsity-preserving QAT
    "pcqat": [*_PRUNE, _SP_CLUSTER, _QAT],  # sparsity- and cluster-preserving QAT
}

PRESETS: dict[str, list[dict[str, Any]]] = {}
for _name, _stages in _BASE.items():
    PRESETS[_name] = copy.deepcopy(_stages) if _stages else [_INT8]
    if _name not in ("ptq", "int8"):
        PRESETS[f"{_name}-int8"] = copy.deepcopy(_stages) + [_INT8]
# Deep Compression on VGG (Han et al.): 90% pruning, 4-bit sparsity-preserving clustering; the rcz
# file adds the entropy coding.
PRESETS["deep-compression"] = [
    {"type": "prune", "method": "global", "amount": 0.9},
    {"type": "finetune", "epochs": EPOCHS, "objective": "ce", "optimizer": "adam", "lr": LR},
    {**_SP_CLUSTER, "clusters": None, "bits": 4},
]


def preset_stages(
    name: str,
    epochs: int | None = None,
    amount: float | None = None,
    clusters: int | None = None,
    bits: int | None = None,
) -> list[dict[str, Any]]:
    """A copy of PRESETS[name] with every training budget set to `epochs` and other strengths.

    `amount` changes the pruning fraction, `clusters` the number of clusters, `bits` the QAT/PTQ
    bit width. Used by benchmarks and the demo to fit paper 000's recipes into a CPU budget.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    stages = copy.deepcopy(PRESETS[name])
    for stage in stages:
        kind = stage["type"]
        if epochs is not None and "epochs" in stage:
            stage["epochs"] = epochs
        if amount is not None and kind == "prune":
            stage["amount"] = amount
        if clusters is not None and kind == "cluster":
            stage.update(clusters=clusters, bits=None)
        if bits is not None and kind in ("qat", "ptq"):
            stage["bits"] = bits
    return stages


PRESET_OVERRIDES = ("epochs", "amount", "clusters", "bits")


def expand_presets(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace `{type = "preset", name = "pcqat-int8"}` entries by the preset's stages.

    The entry may also set `epochs` (every training budget), `amount`, `clusters` or `bits`.
    """
    out: list[dict[str, Any]] = []
    for entry in stages:
        if entry.get("type") != "preset":
            out.append(entry)
            continue
        unknown = sorted(set(entry) - {"type", "name", *PRESET_OVERRIDES})
        if unknown:
            allowed = ", ".join(["name", *PRESET_OVERRIDES])
            raise ConfigError(f"preset entry has unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
        overrides = {k: entry[k] for k in PRESET_OVERRIDES if k in entry}
        out.extend(preset_stages(entry.get("name"), **overrides))
    return out
