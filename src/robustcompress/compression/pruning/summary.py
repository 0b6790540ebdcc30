"""A one-line report of a pruned model for logs."""

from __future__ import annotations

from torch import nn

from robustcompress.measure import count_params, sparsity


def pruning_summary(model: nn.Module, method: str, amount: float) -> str:
    params, nonzero = count_params(model)
    return (f"pruned ({method}, amount {amount:g}): {params:,} parameters, {nonzero:,} non-zero, "
            f"conv/linear sparsity {sparsity(model):.3f}")  # fmt: skip
