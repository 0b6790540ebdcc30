"""Natural corruptions (CIFAR-10-C and MNIST-C suites) as batched torch functions.

    from robustcompress.corruptions import corrupt, SUITES
    x_fog = corrupt(x, "fog", severity=3, seed=0)          # float (N, C, H, W) in [0, 1]

Every corruption works on any device, takes its randomness from a seed or torch.Generator, and
rescales its pixel-length parameters to the image size (docs/corruptions.md).
"""

from robustcompress.corruptions._ops import quantize_uint8
from robustcompress.corruptions.suites import (
    CHUNK,
    CORRUPTIONS,
    SUITES,
    Corruption,
    Suite,
    corrupt,
    corrupt_quantized,
)
from robustcompress.corruptions.weather import load_frost_images, procedural_frost

__all__ = [
    "CHUNK",
    "CORRUPTIONS",
    "SUITES",
    "Corruption",
    "Suite",
    "corrupt",
    "corrupt_quantized",
    "load_frost_images",
    "procedural_frost",
    "quantize_uint8",
]
