"""Compression techniques as stages: pruning/, clustering, quantization/, presets and the rcz format.

Importing this package registers the stages `cluster`, `ptq`, `qat` and `int8`.
"""

from robustcompress.compression import clustering, quantization  # noqa: F401  (registers stages)
