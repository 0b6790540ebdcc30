"""Deterministic, class-balanced selection: --limit-* and the train/validation split."""

from __future__ import annotations

import numpy as np


def balanced_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first `n` items, taken round-robin over classes, returned in their original order.

    Round r takes the r-th item of each class (classes that run out drop out), so every class gets
    n / num_classes items where it has that many, and the choice is the same on every call.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)  # rank[i]: how many earlier items share i's class
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    order = np.lexsort((labels, rank))  # by rank, then by class
    return np.sort(order[:n])


def train_val_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, val positions): round(val_fraction * N) items, class-balanced, drawn with `seed`."""
    n_val = int(round(val_fraction * len(labels)))
    if n_val == 0:
        return np.arange(len(labels)), np.arange(0)
    perm = np.random.default_rng(seed).permutation(len(labels))
    val = np.sort(perm[balanced_first(labels[perm], n_val)])
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val
