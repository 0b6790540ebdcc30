"""Fashion-MNIST and MNIST: the four published idx .gz files in <root>/<name>/."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from robustcompress.data.checksums import OFFICIAL_FILES, verify_file
from robustcompress.data.download import ensure_files
from robustcompress.data.registry import register_dataset
from robustcompress.data.root import HOW_TO_FIX
from robustcompress.data.types import RawDataset
from robustcompress.errors import DataError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGITS = [str(d) for d in range(10)]

_MAGIC = {2049: 1, 2051: 3}  # labels: 1 dimension; images: 3 dimensions (all uint8)


def read_idx(path: Path) -> np.ndarray:
    """An idx .gz file (big-endian header, then uint8 data) as a numpy array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is not a readable gzip file ({exc}). Delete it and copy or --download it again."
        ) from None
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic not in _MAGIC:
        raise DataError(
            f"{path} is not an idx file of uint8 data (magic number {magic}, expected 2049 or 2051)."
        )
    ndim = _MAGIC[magic]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header announces shape {shape}; the "
            "file is truncated or corrupt. Delete it and copy or --download it again."
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _read_idx_dataset(
    name: str, root: Path, download: bool, class_names: list[str], mean: float, std: float
) -> RawDataset:
    folder = root / name
    official = OFFICIAL_FILES[name]
    ensure_files(name, folder, official, download)
    fix = f"Delete it and copy the official file again, or delete it and rerun with --download. {HOW_TO_FIX}"
    for spec in official:
        verify_file(folder / spec.name, spec, fix)
    x_train, y_train, x_test, y_test = (
        read_idx(folder / f"{split}-{kind}")
        for split, kind in [
            ("train", "images-idx3-ubyte.gz"),
            ("train", "labels-idx1-ubyte.gz"),
            ("t10k", "images-idx3-ubyte.gz"),
            ("t10k", "labels-idx1-ubyte.gz"),
        ]
    )
    return RawDataset(
        x_train[:, None],
        y_train.astype(np.int64),
        x_test[:, None],
        y_test.astype(np.int64),
        class_names,
        [mean],
        [std],
    )


@register_dataset("fashion-mnist")
def read_fashion_mnist(root: Path, argument: str | None, download: bool) -> RawDataset:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grey images of 10 clothing classes."""
    return _read_idx_dataset("fashion-mnist", root, download, FASHION_CLASSES, 0.2860, 0.3530)


@register_dataset("mnist")
def read_mnist(root: Path, argument: str | None, download: bool) -> RawDataset:
    """MNIST (LeCun et al. 1998): 60k/10k 28x28 grey images of handwritten digits."""
    return _read_idx_dataset("mnist", root, download, DIGITS, 0.1307, 0.3081)
