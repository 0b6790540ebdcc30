"""Quantization: simulated PTQ / QAT (any bit width 16..1) and real int8 through ONNX Runtime.

Stages: `ptq`, `qat`, `int8`. Importing this package registers them.
"""

from robustcompress.compression.quantization.bn import fold_batchnorm
from robustcompress.compression.quantization.fake import ActFakeQuant, WeightFakeQuant
from robustcompress.compression.quantization.int8 import Int8Config, Int8Model, to_int8
from robustcompress.compression.quantization.simulated import PTQConfig, QATConfig, calibrate, quantize_model

__all__ = [
    "ActFakeQuant",
    "Int8Config",
    "Int8Model",
    "PTQConfig",
    "QATConfig",
    "WeightFakeQuant",
    "calibrate",
    "fold_batchnorm",
    "quantize_model",
    "to_int8",
]
