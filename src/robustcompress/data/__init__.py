"""Datasets: readers for published formats, checksums, opt-in download, limits and splits.

Images come out as float32 N x C x H x W in [0, 1]; normalisation is the model's first layer.
"""

from robustcompress.data import cifar, folder, idx, npz  # noqa: F401  (register the readers)
from robustcompress.data.load import load_dataset, parse_dataset_name, split_dataset
from robustcompress.data.registry import DATASETS, register_dataset
from robustcompress.data.root import resolve_data_root
from robustcompress.data.types import DatasetInfo, DataSplits, ImageData, RawDataset

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetInfo",
    "ImageData",
    "RawDataset",
    "load_dataset",
    "parse_dataset_name",
    "register_dataset",
    "resolve_data_root",
    "split_dataset",
]
