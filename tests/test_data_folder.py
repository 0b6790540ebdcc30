"""Image-folder datasets (folder:PATH): real PNG/JPEG files written with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustcompress.data import load_dataset
from robustcompress.errors import DataError


def write_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), per_class: int = 4) -> dict:
    """root/train/<class>/*.png and root/test/<class>/*.png with random pixels; returns the arrays by file."""
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    arrays = {}
    for split, count in (("train", per_class), ("test", 2)):
        for name in ("zebra", "ant", "moth"):  # not in sorted order on purpose
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
                path = folder / f"{i:03d}.png"
                Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode).save(path)
                arrays[path] = pixels
    return arrays


def test_rgb_folder(tmp_path):
    arrays = write_folder(tmp_path / "imgs")
    s = load_dataset("folder:imgs", tmp_path, val_fraction=0.25, limit_test=3)
    assert s.info.class_names == ["ant", "moth", "zebra"]
    assert s.info.image_shape == (3, 10, 12) and s.info.input_width == 12 and s.info.num_classes == 3
    assert (len(s.train), len(s.val), len(s.test)) == (9, 3, 3)
    assert torch.bincount(s.test.y).tolist() == [1, 1, 1]
    first_ant = arrays[tmp_path / "imgs" / "test" / "ant" / "000.png"]
    assert torch.equal(s.test.x[0], torch.from_numpy(first_ant).permute(2, 0, 1).float() / 255)
    train_pixels = np.stack([a for p, a in arrays.items() if "train" in p.parts])
    assert np.allclose(s.info.mean, train_pixels.reshape(-1, 3).mean(0) / 255)


def test_grey_folder_and_jpeg(tmp_path):
    write_folder(tmp_path / "g", mode="L", size=(8, 8), per_class=2)
    Image.fromarray(np.full((8, 8), 200, np.uint8), "L").save(tmp_path / "g" / "train" / "ant" / "extra.jpg")
    s = load_dataset(f"folder:{tmp_path / 'g'}", val_fraction=0.0)
    assert s.info.image_shape == (1, 8, 8) and s.info.input_width is None
    assert len(s.train) == 7 and abs(float(s.train.x[2].mean()) - 200 / 255) < 0.02  # ant: 000, 001, extra


def test_sizes_must_agree(tmp_path):
    write_folder(tmp_path / "imgs")
    odd = tmp_path / "imgs" / "train" / "moth" / "odd.png"
    Image.new("RGB", (16, 16)).save(odd)
    with pytest.raises(DataError, match="differ in size.*odd.png is 16x16.*12x10.*resize"):
        load_dataset("folder:imgs", tmp_path)


def test_layout_errors(tmp_path):
    (tmp_path / "only" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="lacks test/"):
        load_dataset("folder:only", tmp_path)
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "test" / "ghost").mkdir()
    with pytest.raises(DataError, match="no training counterpart: ghost"):
        load_dataset("folder:imgs", tmp_path)
    (tmp_path / "imgs" / "test" / "ghost").rmdir()
    (tmp_path / "imgs" / "train" / "ant" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_dataset("folder:imgs", tmp_path)
    with pytest.raises(DataError, match="needs a path"):
        load_dataset("folder", tmp_path)
