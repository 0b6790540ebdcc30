"""robustcompress: compress CNNs, restore and measure their robustness."""

from robustcompress.errors import RobustCompressError

__version__ = "0.1.0"
__all__ = ["RobustCompressError", "__version__"]

# Last, so that the names above exist while the plugin modules import: importing any
# robustcompress module makes every built-in registration (stages, evaluations, attacks,
# objectives, checkpoint structures ...) available.
from robustcompress.plugins import load_plugins  # noqa: E402

load_plugins()

# The one-call API (robustcompress.compress, evaluate, finetune, export ...), read from
# robustcompress.api (whose __all__ starts with these) on first use: the package's own module
# imports no room statically, so no room's import of `robustcompress` (for __version__) makes a
# cycle.
API = (
    "compress",
    "evaluate",
    "export",
    "finetune",
    "import_model",
    "load_checkpoint",
    "load_dataset",
    "save_checkpoint",
)
__all__ += list(API)


def __getattr__(name: str):
    if name in API:
        import importlib

        return getattr(importlib.import_module("robustcompress.api"), name)
    raise AttributeError(f"module 'robustcompress' has no attribute {name!r}")
