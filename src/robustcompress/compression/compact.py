"""The `compact` stage: a dense model of the same size as a compressed one, trained from scratch.

Paper 001 compares a compressed model with a compact model of the same size: the same
architecture at a smaller width multiplier. Placed after a compression stage, `compact` measures
its parent (non-zero parameters, `match = "params"`, or the bytes of its rcz file, the file
`size.bytes_compressed` measures, `match = "size"`), finds by bisection the width multiplier at
which the parent's architecture, dense, measures the same, builds that model fresh (seeded) and
trains it from scratch with the experiment's `[train]`; any training field the stage sets
overrides it (`objective = "pgd"` trains adversarially). The study finds the width, not the user.
The chosen width and the target go into the log, the artifact's metadata (`training.compact` in
meta.json) and the model spec (`model.width`, which the report's model descriptions show).

Widths move channel counts by whole channels, so the measure is a staircase in the width: the
width found is the one nearest the target (within about 1% on the zoo's models at 80% sparsity,
see tests/test_compact.py). A candidate's size is measured on its fresh weights: the rcz file of a
dense fp32 model hardly depends on the values.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import nn

from robustcompress.checkpoint import spec_of
from robustcompress.errors import CheckpointError, ConfigError
from robustcompress.measure import count_params
from robustcompress.models import ModelSpec
from robustcompress.stages import StageContext, register_stage
from robustcompress.training.config import TrainConfig
from robustcompress.training.finetune import FinetuneSpec
from robustcompress.training.loop import fit, training_summary

Match = Literal["params", "size"]
WIDTH_DIGITS = 4  # widths are searched and stored to 4 decimals (finer than one channel anywhere)


class CompactConfig(FinetuneSpec):
    """What to match and how to train. Unset training fields come from the experiment's [train]
    (`epochs` too: the compact model trains as long as the baseline did)."""

    match: Match = Field("params", description="match non-zero parameters or the compressed (rcz) file size")
    epochs: int | None = Field(None, ge=1, description="training epochs (None: the experiment's)")
    min_width: float = Field(
        1 / 64, gt=0, le=1, description="narrowest width searched, as a fraction of the parent's width"
    )

    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = ("min_width",)


def measure(model: nn.Module, match: Match, dense: bool = False) -> int:
    """The number `match` compares: non-zero parameters, or the bytes of the model's rcz file.

    A `dense` candidate counts every parameter: its zero-initialised biases will not stay zero.
    """
    if match == "params":
        return count_params(model)[0 if dense else 1]
    from robustcompress.compression.format import save_compressed

    with tempfile.TemporaryDirectory() as tmp:
        return save_compressed(model, Path(tmp) / "model.rcz")


def rebuildable_spec(model: nn.Module) -> ModelSpec:
    """The parent's zoo spec, or a ConfigError saying why its architecture cannot be resized."""
    try:
        spec = ModelSpec.from_dict(spec_of(model))
    except CheckpointError:
        raise ConfigError(
            f"compact: the parent ({type(model).__name__}) carries no model spec, so its architecture "
            "cannot be rebuilt at another width; give the study a zoo model ([model] name = 'cnn8', "
            "'resnet18', ...) or train your narrower model yourself and compare it in its own config"
        ) from None
    if ":" in spec.name or not spec.name:
        raise ConfigError(
            f"compact: the parent is your own module {spec.name!r}, which robustcompress cannot rebuild "
            "at another width (only the zoo's cnn8, resnet*, vgg*, mobilenetv2 take a width "
            "multiplier); use a zoo model for the study, or build the compact model yourself (your "
            "factory with fewer channels) and compare it in a config of its own"
        )
    return spec


def find_width(
    spec: ModelSpec, target: int, match: Match, seed: int = 0, min_width: float = 1 / 64
) -> tuple[float, int]:
    """(width, measured): the width multiplier of `spec`'s architecture whose dense model measures
    nearest `target`, searched in [min_width x spec.width, spec.width] by bisection.

    The measure grows with the width in steps, so bisection brackets the step that crosses
    `target` and the nearer side is taken.
    """

    def size_at(width: float) -> int:
        candidate = ModelSpec.from_dict({**spec.to_dict(), "width": width}).build(seed=seed)
        return measure(candidate, match, dense=True)

    lo, hi = round(spec.width * min_width, WIDTH_DIGITS), spec.width
    size_lo, size_hi = size_at(lo), size_at(hi)
    if size_lo == size_hi:
        raise ConfigError(
            f"compact: model {spec.name!r} measures the same at widths {lo:g} and {hi:g}, so it has no "
            "width multiplier to search; use a zoo model whose width option scales its channels"
        )
    if target >= size_hi:
        return hi, size_hi
    if target <= size_lo:
        return lo, size_lo
    while True:  # invariant: size_at(lo) < target <= size_at(hi)
        mid = round((lo + hi) / 2, WIDTH_DIGITS)
        if mid in (lo, hi):
            break
        size_mid = size_at(mid)
        if size_mid < target:
            lo, size_lo = mid, size_mid
        else:
            hi, size_hi = mid, size_mid
    return (lo, size_lo) if target - size_lo < size_hi - target else (hi, size_hi)


def compact_train_config(base: TrainConfig | None, cfg: CompactConfig) -> TrainConfig:
    """The experiment's [train] (epochs, warm-up, early stopping included), then what `cfg` sets."""
    values = (base or TrainConfig()).model_dump()
    for name in cfg.FINETUNE_FIELDS:
        value = getattr(cfg, name)
        if value is not None:
            values[name] = value
    return TrainConfig.parse(values, where="compact")


@register_stage("compact", CompactConfig)
def compact(model: nn.Module, cfg: CompactConfig, ctx: StageContext) -> nn.Module:
    spec = rebuildable_spec(model)
    target = measure(model, cfg.match)
    if not target:
        raise ConfigError(
            "compact: the parent has no torch parameters to count (a compiled model?); "
            'match its file size instead: match = "size"'
        )
    width, measured = find_width(spec, target, cfg.match, ctx.seed, cfg.min_width)
    unit = "non-zero parameters" if cfg.match == "params" else "rcz bytes"
    ctx.log(
        f"compact: parent {spec.name} (width {spec.width:g}) has {target:,} {unit}; width {width:g} "
        f"has {measured:,} ({100 * (measured - target) / target:+.2f}%)"
    )
    small = ModelSpec.from_dict({**spec.to_dict(), "width": width}).build(seed=ctx.seed)
    train = compact_train_config(ctx.train, cfg)
    ctx.log(f"compact: training from scratch, {train.epochs} epochs, objective {train.objective!r}")
    result = fit(small, ctx.data, train, device=ctx.device, seed=ctx.seed, progress=ctx.progress)
    record: dict[str, Any] = {
        "match": cfg.match,
        "target": target,
        "measured": measured,
        "width": width,
        "parent_width": spec.width,
    }
    small.rc_training = {**training_summary(result), "config": train.model_dump(), "compact": record}  # noqa: B010  kept in the artifact's meta.json
    return small.eval()
