"""Test-only plugins that make a study's tasks observable from outside the process that runs them.

`counted_ce` is cross-entropy that appends its process id to a file each time a training builds it
(so a test counts baseline trainings, whichever worker ran them); `die_once` SIGKILLs its own process
the first time it runs (a marker file remembers), as a crashed worker would; `refuse` fails with a
user error, as a stage given data it cannot use would.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from torch import nn

from robustcompress.errors import DataError
from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.objectives import CrossEntropy, register_objective


@register_objective("counted_ce")
class CountedCrossEntropy(CrossEntropy):
    def __init__(self, count: str, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        with open(count, "a") as f:
            f.write(f"{os.getpid()}\n")


class DieOnceConfig(StageConfig):
    marker: str


@register_stage("die_once", DieOnceConfig)
def die_once(model: nn.Module, cfg: DieOnceConfig, ctx: StageContext) -> nn.Module:
    marker = Path(cfg.marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return model


class RefuseConfig(StageConfig):
    pass


@register_stage("refuse", RefuseConfig)
def refuse(model: nn.Module, cfg: RefuseConfig, ctx: StageContext) -> nn.Module:
    raise DataError("refuse: this stage always fails (a user error, on purpose)")
