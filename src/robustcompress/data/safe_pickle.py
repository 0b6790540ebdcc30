"""A restricted unpickler for CIFAR's python batches: numpy arrays, lists, dicts, strings, nothing else.

Plain pickle.load runs whatever callable a file names (os.system included). CIFAR batches only
need numpy's array reconstruction and dtype; every other global is refused before it is looked
up, so a tampered file raises a DataError and its payload never runs.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from robustcompress.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles written by Python 3 store bytes
}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # CIFAR was pickled by Python 2
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path}: refusing to unpickle {module}.{name}; a CIFAR batch holds only numpy arrays, "
                "lists and strings, so this file is not an official one and may carry code. Delete it and "
                "fetch the official files again (--download)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self.path}: refusing a persistent id in a pickle; this is not an official CIFAR batch."
        )


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle `path` allowing only what a CIFAR batch needs; anything else raises DataError."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as exc:  # pickle reports truncation and corruption through many exception types
        raise DataError(
            f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); it is truncated or "
            "corrupt. Delete it and fetch the official files again (--download)."
        ) from None
