"""Pruning: unstructured (global, layer-wise) and structured channel pruning with physical removal.

Masks live as parametrizations (`weight = original * mask`); `bake_masks` leaves exact zeros,
which later stages (clustering, quantization) treat as pruned. Channel pruning follows a torch.fx
dependency graph and `harden` cuts the zeroed channels out. Importing this package registers the
`prune` stage and the checkpoint structures "prune_masks", "prune_baked" and "channel_pruned".
"""

from robustcompress.compression.pruning.graph import DependencyGraph
from robustcompress.compression.pruning.importance import IMPORTANCES, channel_importance
from robustcompress.compression.pruning.masks import (
    PruningMask,
    apply_masks,
    bake_masks,
    is_masked,
    masks_of,
    register_mask_slots,
)
from robustcompress.compression.pruning.schedule import GradualPruning, iterative_amounts, polynomial_sparsity
from robustcompress.compression.pruning.stage import PruneConfig, prune, pruner
from robustcompress.compression.pruning.structured import (
    channel_masks,
    example_input_for,
    harden,
    prune_channels,
    select_channels,
)
from robustcompress.compression.pruning.unstructured import (
    magnitude_masks,
    prunable_layers,
    prune_unstructured,
)

__all__ = [
    "IMPORTANCES",
    "DependencyGraph",
    "GradualPruning",
    "PruneConfig",
    "PruningMask",
    "apply_masks",
    "bake_masks",
    "channel_importance",
    "channel_masks",
    "example_input_for",
    "harden",
    "is_masked",
    "iterative_amounts",
    "magnitude_masks",
    "masks_of",
    "polynomial_sparsity",
    "prunable_layers",
    "prune",
    "prune_channels",
    "prune_unstructured",
    "pruner",
    "register_mask_slots",
    "select_channels",
]
