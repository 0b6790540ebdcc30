"""The rcz compressed file format: `save_compressed(model, path)` and `load_compressed(path)`."""

from robustcompress.compression.format.rcz import load_compressed, read_header, save_compressed

__all__ = ["load_compressed", "read_header", "save_compressed"]
