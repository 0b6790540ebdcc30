"""Dataset readers by name: `reader(root, argument, download) -> RawDataset`.

`argument` is what follows the colon in names like `npz:PATH` (None for plain names).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robustcompress.data.types import RawDataset
from robustcompress.registry import Registry

Reader = Callable[[Path, str | None, bool], RawDataset]

DATASETS: Registry[Reader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Reader], Reader]:
    """Register a reader under `name` (used as `name` or `name:ARGUMENT` on the command line)."""
    return DATASETS.register(name)
