"""CIFAR-10 and CIFAR-100: the official python batches (or their .tar.gz) in <root>/<name>/.

The batches are pickles, read with a restricted unpickler after their md5 is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustcompress.data.checksums import OFFICIAL_ARCHIVES, OFFICIAL_FILES, verify_file
from robustcompress.data.download import base_urls, download_file, extract_tar
from robustcompress.data.registry import register_dataset
from robustcompress.data.root import HOW_TO_FIX, missing_files_error
from robustcompress.data.safe_pickle import load_restricted_pickle
from robustcompress.data.types import RawDataset
from robustcompress.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    folder: str  # the folder the official archive unpacks to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}

_FIX = f"Delete it and rerun with --download, or copy the official file again. {HOW_TO_FIX}"


def _as_str_keys(obj: object, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a dict; it is not a CIFAR batch.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 N x 3 x 32 x 32 images, int64 labels), with its contents checked."""
    batch = _as_str_keys(load_restricted_pickle(path), path)
    data, labels = batch.get("data"), batch.get(labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: 'data' must be a uint8 array of shape (N, 3072); this is not a CIFAR batch."
        )
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() >= num_classes)):
        raise DataError(f"{path}: {labels_key!r} must hold {len(data)} labels in 0..{num_classes - 1}.")
    return data.reshape(-1, 3, 32, 32), labels


def read_class_names(path: Path, names_key: str) -> list[str]:
    meta = _as_str_keys(load_restricted_pickle(path), path)
    names = meta.get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, str | bytes) for n in names):
        raise DataError(
            f"{path}: {names_key!r} must be a list of class names; this is not a CIFAR meta file."
        )
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _unpack_or_explain(
    name: str, folder: Path, layout: CifarLayout, missing: list[str], download: bool
) -> None:
    """Fill the batch folder from the official archive (present, or downloaded), or raise a DataError."""
    archive_spec = OFFICIAL_ARCHIVES[name]
    archive = folder / archive_spec.name
    if not archive.is_file():
        if not download:
            npz = sorted(p.name for p in folder.glob("*.npz")) if folder.is_dir() else []
            alternative = f" (or the archive {archive_spec.name} in {folder})"
            hint = ""
            if npz:
                hint = (
                    f"{folder} holds no CIFAR batches but holds {', '.join(npz)}: read it with "
                    f"--dataset npz:{name}/{npz[0]} (npz:PATH, relative to the data root)."
                )
            raise missing_files_error(name, folder / layout.folder, missing, alternative, hint)
        download_file([base + archive_spec.name for base in base_urls(name)], archive, archive_spec)
    verify_file(archive, archive_spec, _FIX)
    extract_tar(archive, folder, layout.folder)


def read_cifar(name: str, root: Path, download: bool) -> RawDataset:
    layout = LAYOUTS[name]
    folder = root / name
    batch_dir = folder / layout.folder
    official = OFFICIAL_FILES[name]
    missing = [spec.name for spec in official if not (batch_dir / spec.name).is_file()]
    if missing:
        _unpack_or_explain(name, folder, layout, missing, download)
    for spec in official:
        verify_file(batch_dir / spec.name, spec, _FIX)
    class_names = read_class_names(batch_dir / layout.meta, layout.names_key)
    train = [read_batch(batch_dir / f, layout.labels_key, len(class_names)) for f in layout.train]
    test = [read_batch(batch_dir / f, layout.labels_key, len(class_names)) for f in layout.test]
    return RawDataset(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=np.concatenate([x for x, _ in test]),
        y_test=np.concatenate([y for _, y in test]),
        class_names=class_names,
        mean=list(layout.mean),
        std=list(layout.std),
    )


@register_dataset("cifar10")
def read_cifar10(root: Path, argument: str | None, download: bool) -> RawDataset:
    """CIFAR-10 (Krizhevsky 2009): 50k/10k 32x32 colour images of 10 classes."""
    return read_cifar("cifar10", root, download)


@register_dataset("cifar100")
def read_cifar100(root: Path, argument: str | None, download: bool) -> RawDataset:
    """CIFAR-100 (Krizhevsky 2009): 50k/10k 32x32 colour images of 100 fine classes."""
    return read_cifar("cifar100", root, download)
