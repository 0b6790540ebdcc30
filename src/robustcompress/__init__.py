"""robustcompress: compress CNNs, restore and measure their robustness."""

from robustcompress.errors import RobustCompressError

__version__ = "0.1.0"
__all__ = ["RobustCompressError", "__version__"]
