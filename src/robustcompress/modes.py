"""Train/eval mode for a stretch of code, restored afterwards.

Measuring, attacking, calibrating and tracing all want eval mode (batch-norm running statistics,
no dropout) without changing the mode the caller left the model in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode; afterwards every submodule gets back its own previous mode.

    Restoring per submodule (not `model.train(was_training)`) keeps a deliberately frozen part,
    such as batch norms held in eval mode during fine-tuning, as the caller left it.
    """
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in saved:
            m.training = training
