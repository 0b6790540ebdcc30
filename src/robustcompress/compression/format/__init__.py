"""Writing compressed models: the rcz file (`save_compressed`, `load_compressed`) and checked
ONNX exports (`export_onnx_checked` for float models, `export_int8_checked` for ONNX Runtime int8)."""

from robustcompress.compression.format.onnx import (
    ExportParityError,
    ExportReport,
    Parity,
    export_int8_checked,
    export_onnx_checked,
)
from robustcompress.compression.format.rcz import load_compressed, read_header, save_compressed

__all__ = [
    "ExportParityError",
    "ExportReport",
    "Parity",
    "export_int8_checked",
    "export_onnx_checked",
    "load_compressed",
    "read_header",
    "save_compressed",
]
