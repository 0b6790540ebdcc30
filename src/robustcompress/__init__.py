"""robustcompress: compress CNNs, restore and measure their robustness."""

from robustcompress.errors import RobustCompressError

__version__ = "0.1.0"
__all__ = ["RobustCompressError", "__version__"]

# Last, so that the names above exist while the plugin modules import: importing any
# robustcompress module makes every built-in registration (stages, evaluations, attacks,
# objectives, checkpoint structures ...) available.
from robustcompress.plugins import load_plugins  # noqa: E402

load_plugins()

# The one-call API (robustcompress.compress, evaluate, finetune, export ...); after the plugins,
# which it uses.
from robustcompress.api import (  # noqa: E402
    compress,
    evaluate,
    export,
    finetune,
    import_model,
    load_checkpoint,
    load_dataset,
    save_checkpoint,
)

__all__ += [
    "compress",
    "evaluate",
    "export",
    "finetune",
    "import_model",
    "load_checkpoint",
    "load_dataset",
    "save_checkpoint",
]
