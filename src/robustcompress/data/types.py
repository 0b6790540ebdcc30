"""The in-memory form of a dataset: float images in [0, 1], channels first, and their labels."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageData:
    """Images `x` (float32, N x C x H x W, values in [0, 1]) and labels `y` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.y.dim() != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"ImageData needs x of shape (N, C, H, W) and y of shape (N,), got {tuple(self.x.shape)} "
                f"and {tuple(self.y.shape)}"
            )

    @classmethod
    def from_uint8(cls, x: np.ndarray, y: np.ndarray) -> ImageData:
        """uint8 N x C x H x W pixels and integer labels -> float images in [0, 1]."""
        images = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(255.0)
        return cls(images, torch.from_numpy(np.asarray(y, dtype=np.int64).copy()))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageData:
        """The images at `indices`, in that order (a copy)."""
        index = torch.as_tensor(
            np.asarray(indices, dtype=np.int64) if not torch.is_tensor(indices) else indices, dtype=torch.long
        )
        return ImageData(self.x[index.to(self.x.device)], self.y[index.to(self.y.device)])

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) batches; with `shuffle`, in an order drawn from `generator` (a CPU generator)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        n = len(self)
        if not shuffle:
            for start in range(0, n, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.x.device)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            yield self.x[index], self.y[index]

    def to(self, device: torch.device | str) -> ImageData:
        """The same images on `device` (self when already there)."""
        device = torch.device(device)
        if self.x.device == device and self.y.device == device:
            return self
        return ImageData(self.x.to(device), self.y.to(device))


@dataclass
class DatasetInfo:
    """What a model needs to know about a dataset: classes, image shape and normalisation."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int  # image height; images are square unless `input_width` says otherwise
    mean: list[float]
    std: list[float]
    class_names: list[str] = field(default_factory=list)
    input_width: int | None = None  # set only for non-square images

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return (self.in_channels, self.input_size, self.input_width or self.input_size)


@dataclass
class DataSplits:
    """Train, validation (carved out of train) and test data of one dataset, plus its info."""

    train: ImageData
    val: ImageData
    test: ImageData
    info: DatasetInfo

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.info.name}: train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, classes={self.info.num_classes}, shape={self.info.image_shape})"
        )


@dataclass
class RawDataset:
    """What a reader returns: uint8 N x C x H x W pixels and labels, before limits and splits.

    `mean`/`std` are None when they must be computed from the training images.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None
