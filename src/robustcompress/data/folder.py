"""Image folders: PATH/train/<class>/*.png|jpg... and PATH/test/<class>/*, class names sorted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from robustcompress.data.registry import register_dataset
from robustcompress.data.root import resolve_user_path
from robustcompress.data.types import RawDataset
from robustcompress.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _image_files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        files += [(p, label) for p in found]
    return files


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({exc}). Remove or replace it.") from None


def _to_array(images: list[tuple[Path, Image.Image]], mode: str, size: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(images), 1 if mode == "L" else 3, size[1], size[0]), dtype=np.uint8)
    for i, (path, image) in enumerate(images):
        if image.size != size:
            first = images[0][0]
            raise DataError(
                f"images differ in size: {path} is {image.size[0]}x{image.size[1]} (width x height) but "
                f"{first} is {size[0]}x{size[1]}. An image folder dataset needs one size; resize the "
                "images first (for example with PIL's Image.resize)."
            )
        pixels = np.asarray(image.convert(mode))
        out[i] = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)
    return out


def read_image_folder(path: Path) -> RawDataset:
    """Read train/ and test/ class folders; grey if every image is grey, else RGB."""
    train_dir, test_dir = path / "train", path / "test"
    for split_dir in (train_dir, test_dir):
        if not split_dir.is_dir():
            raise DataError(
                f"image folder dataset {path} lacks {split_dir.name}/; the layout is "
                f"{path}/train/<class>/*.png and {path}/test/<class>/*.png (png, jpg and other PIL formats)."
            )
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(
            f"{train_dir} holds no class folders; put each class's images in {train_dir}/<class>/."
        )
    unknown = sorted(d.name for d in test_dir.iterdir() if d.is_dir() and d.name not in classes)
    if unknown:
        raise DataError(f"{test_dir} has class folders with no training counterpart: {', '.join(unknown)}.")
    train_files, test_files = _image_files(train_dir, classes), _image_files(test_dir, classes)
    labels_seen = {label for _, label in train_files}
    empty = [name for label, name in enumerate(classes) if label not in labels_seen]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(empty)} in {train_dir} hold no images "
            f"({', '.join(sorted(EXTENSIONS))})."
        )
    if not test_files:
        raise DataError(f"{test_dir} holds no images in its class folders.")
    train_images = [(p, _open(p)) for p, _ in train_files]
    test_images = [(p, _open(p)) for p, _ in test_files]
    everything = train_images + test_images
    mode = "L" if all(image.mode in GREY_MODES for _, image in everything) else "RGB"
    size = everything[0][1].size
    return RawDataset(
        x_train=_to_array(train_images, mode, size),
        y_train=np.array([label for _, label in train_files], dtype=np.int64),
        x_test=_to_array(test_images, mode, size),
        y_test=np.array([label for _, label in test_files], dtype=np.int64),
        class_names=classes,
    )


@register_dataset("folder")
def read_folder_dataset(root: Path, argument: str | None, download: bool) -> RawDataset:
    """`folder:PATH`, PATH absolute or relative to the data root (or the current folder)."""
    if not argument:
        raise DataError(
            "the folder dataset needs a path: folder:PATH holding train/<class>/ and test/<class>/."
        )
    return read_image_folder(resolve_user_path(argument, root, "image folder"))
