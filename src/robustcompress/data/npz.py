"""A generic .npz: uint8 images (N x H x W x C or N x H x W) and integer labels.

Keys x_train, y_train, x_test, y_test; optional `label_names` (or `class_names`). Read with
allow_pickle=False, so an .npz never runs code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from robustcompress.data.registry import register_dataset
from robustcompress.data.root import resolve_user_path
from robustcompress.data.types import RawDataset
from robustcompress.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(
            f"{path}: {key} has dtype {x.dtype}; an npz dataset stores uint8 pixels (0..255). Convert "
            "it with (x * 255).round().astype(np.uint8) if it holds floats in [0, 1]."
        )
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[3] in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)[:, :3]
    raise DataError(
        f"{path}: {key} has shape {x.shape}; expected N x H x W or N x H x W x C with C in 1, 3 "
        "(channels last)."
    )


def _labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != n or (n and y.min() < 0):
        raise DataError(
            f"{path}: {key} must hold {n} non-negative integer labels (shape ({n},)); it has dtype "
            f"{y.dtype} and shape {y.shape}."
        )
    return y.astype(np.int64)


def read_npz(path: Path) -> RawDataset:
    """Read and check an npz dataset file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in KEYS if key not in data.files]
            if missing:
                raise DataError(
                    f"{path} lacks the key(s) {', '.join(missing)}; an npz dataset holds x_train, "
                    f"y_train, x_test, y_test (it has {', '.join(data.files)})."
                )
            arrays = {key: data[key] for key in KEYS}
            names_key = next((k for k in ("label_names", "class_names") if k in data.files), None)
            names = [str(n) for n in data[names_key]] if names_key else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({exc}); it is truncated or corrupt. Write it again "
            "with numpy.savez or numpy.savez_compressed."
        ) from None
    x_train = _images(path, "x_train", arrays["x_train"])
    x_test = _images(path, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: train images are C x H x W = {x_train.shape[1:]} but test images are "
            f"{x_test.shape[1:]}; both must have one shape."
        )
    y_train = _labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _labels(path, "y_test", arrays["y_test"], len(x_test))
    num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    if names is not None and len(names) >= num_classes:
        class_names = names
    else:
        class_names = [str(c) for c in range(num_classes)]
    return RawDataset(x_train, y_train, x_test, y_test, class_names)


@register_dataset("npz")
def read_npz_dataset(root: Path, argument: str | None, download: bool) -> RawDataset:
    """`npz:PATH`, PATH absolute or relative to the data root (or the current folder)."""
    if not argument:
        raise DataError("the npz dataset needs a path: npz:PATH (absolute, or relative to the data root).")
    return read_npz(resolve_user_path(argument, root, "npz file"))
