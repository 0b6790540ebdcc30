"""load_dataset: read a dataset by name, apply the limits, carve the validation split."""

from __future__ import annotations

import os

import numpy as np

from robustcompress.data.registry import DATASETS
from robustcompress.data.root import resolve_data_root
from robustcompress.data.splits import balanced_first, train_val_split
from robustcompress.data.stats import channel_stats
from robustcompress.data.types import DatasetInfo, DataSplits, ImageData, RawDataset
from robustcompress.errors import ConfigError


def parse_dataset_name(name: str) -> tuple[str, str | None]:
    """'npz:data/x.npz' -> ('npz', 'data/x.npz'); 'mnist' -> ('mnist', None)."""
    kind, sep, argument = name.partition(":")
    return kind.strip().lower(), (argument if sep else None)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    download: bool = False,
) -> DataSplits:
    """Read dataset `name` from the data root and split it.

    `limit_train` keeps the first N training images (class-balanced, round-robin over classes in file
    order) and the validation set, round(val_fraction * N) images drawn with `seed` and class-balanced,
    is then carved out of them; so limit_train=1100, val_fraction=1/11 gives 1000 train + 100 val.
    `limit_test` keeps the first N test images, class-balanced the same way.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for label, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
        if limit is not None and limit < 1:
            raise ConfigError(f"{label} must be a positive number of images, got {limit}")
    kind, argument = parse_dataset_name(name)
    reader = DATASETS.get(kind)
    data_root = resolve_data_root(root)
    raw = reader(data_root, argument, download)
    return split_dataset(
        name, raw, val_fraction=val_fraction, seed=seed, limit_train=limit_train, limit_test=limit_test
    )


def split_dataset(
    name: str,
    raw: RawDataset,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> DataSplits:
    """Limits, validation split and float conversion of what a reader returned."""
    if raw.mean is None or raw.std is None:
        mean, std = channel_stats(raw.x_train)
    else:
        mean, std = list(raw.mean), list(raw.std)
    train_pool = balanced_first(raw.y_train, limit_train) if limit_train else np.arange(len(raw.y_train))
    test_keep = balanced_first(raw.y_test, limit_test) if limit_test else np.arange(len(raw.y_test))
    y_pool = raw.y_train[train_pool]
    train_pos, val_pos = train_val_split(y_pool, val_fraction, seed)
    if len(train_pos) == 0:
        raise ConfigError(
            f"dataset {name!r}: no training images left after taking {len(val_pos)} for validation; "
            "raise --limit-train or lower val_fraction."
        )
    train_idx, val_idx = train_pool[train_pos], train_pool[val_pos]
    _, channels, height, width = raw.x_train.shape
    info = DatasetInfo(
        name=name,
        num_classes=len(raw.class_names),
        in_channels=channels,
        input_size=height,
        mean=mean,
        std=std,
        class_names=list(raw.class_names),
        input_width=None if width == height else width,
    )
    return DataSplits(
        train=ImageData.from_uint8(raw.x_train[train_idx], raw.y_train[train_idx]),
        val=ImageData.from_uint8(raw.x_train[val_idx], raw.y_train[val_idx]),
        test=ImageData.from_uint8(raw.x_test[test_keep], raw.y_test[test_keep]),
        info=info,
    )
