"""Stages `ptq` (post-training quantization) and `qat` (quantization-aware training), simulated.

Both fold batch norm (optional), put a symmetric weight quantizer on every conv / linear weight
and an asymmetric quantizer on its input, and calibrate activation ranges on a few training
batches. QAT then fine-tunes through the fake quantizers (straight-through estimator, optional
LSQ step sizes). Constraints of earlier stages are kept: exact zeros stay zero (a mask), and
clustered layers are quantized per tensor so they keep at most K values.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from robustcompress.compression.clustering import ClusteredWeight, clustered_parametrization
from robustcompress.compression.layers import bake_foreign, matches_any, parametrizations_of, weighted_layers
from robustcompress.compression.quantization.bn import fold_batchnorm, replay_folded
from robustcompress.compression.quantization.fake import (
    ActFakeQuant,
    Observer,
    WeightFakeQuant,
    quantize_input_hook,
)
from robustcompress.compression.structure import add_structure, register_structure
from robustcompress.errors import ConfigError
from robustcompress.modes import eval_mode
from robustcompress.stages import StageConfig, StageContext, register_stage
from robustcompress.training.finetune import PAPER000, FinetuneSpec, finetune_config, finetune_model


class PTQConfig(StageConfig):
    """Simulated quantization; `batch_size` and `skip` are the old names of `calibration_batch_size`
    and `exclude`."""

    bits: int = Field(8, ge=1, le=16, description="weight bit width (paper 003 sweeps 16, 8, 4, 2, 1)")
    act_bits: int | None = Field(None, ge=0, le=16, description="activation bits; None = bits, 0 = float")
    per_channel: bool = True
    observer: Observer = "minmax"
    percentile: float = Field(99.99, gt=50, le=100)
    calibration_batches: int = Field(8, ge=1)
    calibration_batch_size: int = Field(64, ge=1)
    fold_bn: bool = True
    preserve_sparsity: bool = True
    layers: list[Literal["conv", "linear"]] = ["conv", "linear"]
    exclude: list[str] = Field(
        default_factory=list, description="fnmatch patterns of layers to leave in float"
    )

    OLD_NAMES: ClassVar[dict[str, str]] = {"calibration_batch_size": "batch_size", "exclude": "skip"}


class QATConfig(PTQConfig, FinetuneSpec):
    """PTQ, then paper 000's fine-tuning through the quantizers (Adam, constant lr 1e-4, patience 5).

    `batch_size` is the fine-tuning batch (old name `train_batch_size`); a config that uses old
    names (`train_batch_size`, `skip`) is read entirely in them, `batch_size` then being the
    calibration batch as it was.
    """

    epochs: int = Field(3, ge=0)
    lr: float = Field(1e-4, gt=0)
    patience: int | None = Field(5, ge=1)
    lsq: bool = False
    observer: Observer = "moving_average"

    OLD_NAMES: ClassVar[dict[str, str]] = {
        "calibration_batch_size": "batch_size", "batch_size": "train_batch_size", "exclude": "skip",
    }  # fmt: skip
    KEY_OMITS_DEFAULT: ClassVar[tuple[str, ...]] = (
        "objective", "objective_params", "optimizer", "momentum", "weight_decay", "schedule",
        "max_steps_per_epoch", "sam_rho",
    )  # fmt: skip


def _attach(module: nn.Module, spec: dict) -> None:
    """Add the weight and input quantizers described by `spec` to one layer (no calibration)."""
    keep = None
    if spec["keep"]:
        keep = torch.ones(module.weight.shape, dtype=torch.uint8, device=module.weight.device)
    wq = WeightFakeQuant(spec["bits"], spec["groups"], lsq=spec["lsq"], keep=keep).to(module.weight.device)
    parametrize.register_parametrization(module, "weight", wq)
    if spec["act_bits"]:
        module.input_quant = ActFakeQuant(spec["act_bits"], spec["observer"]).to(module.weight.device)
        module.register_forward_pre_hook(quantize_input_hook)


def quantize_model(model: nn.Module, cfg: PTQConfig, lsq: bool = False) -> dict[str, dict]:
    """Put fake quantizers on every selected layer in place; returns the per-layer specs."""
    act_bits = cfg.bits if cfg.act_bits is None else cfg.act_bits
    specs: dict[str, dict] = {}
    for name, module in weighted_layers(model, tuple(cfg.layers)):
        if matches_any(name, cfg.exclude):
            continue
        if any(isinstance(p, WeightFakeQuant) for p in parametrizations_of(module)):
            raise ConfigError(f"layer {name!r} is already quantized; use one ptq/qat stage per model")
        bake_foreign(module, keep=(ClusteredWeight,))
        clustered = clustered_parametrization(module)
        weight = module.weight.detach()
        zeros = bool((weight == 0).any()) and cfg.preserve_sparsity and clustered is None
        groups = weight.shape[0] if cfg.per_channel and (clustered is None or clustered.groups > 1) else 1
        spec = {"bits": cfg.bits, "groups": groups, "lsq": lsq, "keep": zeros, "act_bits": act_bits}
        spec["observer"] = cfg.observer
        _attach(module, spec)
        wq = next(p for p in parametrizations_of(module) if isinstance(p, WeightFakeQuant))
        if zeros:
            wq.keep.copy_((weight != 0).to(torch.uint8))
        with torch.no_grad():
            wq.calibrate(parametrize_input(module, wq))
        specs[name] = spec
    if not specs:
        raise ConfigError("quantization found no layer to quantize; check `layers` and `exclude`")
    return specs


def parametrize_input(module: nn.Module, wq: WeightFakeQuant) -> torch.Tensor:
    """The tensor `wq` receives: the original weight passed through the parametrizations before it."""
    plist = module.parametrizations["weight"]
    w = plist.original
    for p in plist:
        if p is wq:
            break
        w = p(w)
    return w * wq.keep if wq.keep is not None else w


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, batches: int, batch_size: int, device) -> None:
    """Run `batches` batches of `x` through the model with every activation observer recording."""
    quants = [m for m in model.modules() if isinstance(m, ActFakeQuant)]
    for q in quants:
        q.start_calibration()
    with eval_mode(model):
        for i in range(batches):
            chunk = x[i * batch_size : (i + 1) * batch_size]
            if len(chunk) == 0:
                break
            model(chunk.to(device))
    for q in quants:
        q.finish_calibration()


def _prepare(model: nn.Module, cfg: PTQConfig, ctx: StageContext, lsq: bool) -> nn.Module:
    model.to(ctx.device)
    if cfg.fold_bn:
        pairs = fold_batchnorm(model)
        if pairs:
            add_structure(model, "bn_folded", pairs=[list(p) for p in pairs])
    specs = quantize_model(model, cfg, lsq=lsq)
    add_structure(model, "fake_quant", layers=specs)
    calibrate(model, ctx.data.train.x, cfg.calibration_batches, cfg.calibration_batch_size, ctx.device)
    ctx.log(f"quantized {len(specs)} layers to {cfg.bits} bits (simulated)")
    return model


@register_stage("ptq", PTQConfig)
def ptq_stage(model: nn.Module, cfg: PTQConfig, ctx: StageContext) -> nn.Module:
    model = _prepare(model, cfg, ctx, lsq=False)
    return model.eval()


@register_stage("qat", QATConfig)
def qat_stage(model: nn.Module, cfg: QATConfig, ctx: StageContext) -> nn.Module:
    model = _prepare(model, cfg, ctx, lsq=cfg.lsq)
    if cfg.epochs:
        finetune_model(model, ctx, finetune_config(ctx.train, cfg, PAPER000), "quantization-aware training")
    return model.eval()


@register_structure("bn_folded")
def _replay_bn(model: nn.Module, params: dict) -> nn.Module:
    return replay_folded(model, params["pairs"])


@register_structure("fake_quant")
def _replay_fake_quant(model: nn.Module, params: dict) -> nn.Module:
    for name, spec in params["layers"].items():
        module = model.get_submodule(name)
        bake_foreign(module, keep=(ClusteredWeight,))
        _attach(module, spec)
    return model
