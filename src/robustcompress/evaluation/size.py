"""The `size` evaluation: real bytes on disk of a (compressed) model, and the ratios papers report.

Metrics (bytes unless said otherwise):
- `size.bytes`: this model's checkpoint weights (safetensors, as saved),
- `size.bytes_dense`: the fp32 checkpoint weights of the same architecture uncompressed
  (ctx.parent when given, else the model's spec rebuilt),
- `size.bytes_compressed`: the rcz file (robustcompress.compression.format),
- `size.ratio`: bytes_dense / bytes_compressed, paper 000's compression ratio,
- `size.ratio_gzip`: gzip(dense fp32) / gzip(this model's weights as a plain checkpoint) -
  what tfmot's examples report,
- `size.bytes_paper002`: paper 002's estimate: non-zero weights x bits + codebooks,
- `size.rate_eq7`: paper 002's Eq. 7 rate 2^n / weights + n / 32 over clustered layers (1 if none).
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import safetensors.torch
from torch import nn

from robustcompress.capabilities import native_onnx, stored_tensors
from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)


class SizeConfig(EvalConfig):
    gzip_level: int = 9


def checkpoint_bytes(model: nn.Module) -> bytes:
    """The safetensors bytes a checkpoint of `model` holds."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return safetensors.torch.save(state)


def dense_model(model: nn.Module, parent: nn.Module | None) -> nn.Module:
    """The dense fp32 reference: the parent, else the architecture freshly built from a fixed seed
    (its gzip size depends on the weights' values: a rerun must measure the same)."""
    if parent is not None:
        return parent
    from robustcompress.checkpoint import spec_of
    from robustcompress.models import ModelSpec

    return ModelSpec.from_dict(spec_of(model)).build(seed=0)


def plain_weights_bytes(model: nn.Module) -> bytes:
    """What tfmot gzips: the weights with compression wrappers stripped (an ONNX model: its file)."""
    from robustcompress.compression.quantization.int8 import plain_float_copy

    onnx = native_onnx(model)
    return onnx if onnx is not None else checkpoint_bytes(plain_float_copy(model))


def paper002_size(model: nn.Module) -> tuple[float, float]:
    """(approximate bytes, Eq. 7 rate): non-zeros x precision + codebooks; rate over clustered layers.

    Each layer's storage is what its parametrizations declare (compression.storage); a compiled
    model that stores its own tensors counts their non-zeros at their stored width.
    """
    from robustcompress.compression.layers import weighted_layers
    from robustcompress.compression.storage import weight_storage

    stored = stored_tensors(model)
    if stored is not None:
        return float(sum(int((t != 0).sum()) * t.element_size() for t in stored)), 1.0
    bits_total, eq7_num, eq7_den = 0.0, 0.0, 0.0
    for _, module in weighted_layers(model):
        w = module.weight.detach()
        storage = weight_storage(module)
        bits_total += storage.bits(int((w != 0).sum()))
        if storage.index_bits is not None:
            n = storage.index_bits
            eq7_num += (2**n) * storage.groups * 32 + n * w.numel()
            eq7_den += w.numel() * 32
    others = sum(
        p.numel() * 32
        for name, p in model.named_parameters()
        if "weight" not in name.split(".")[-1] and "parametrizations" not in name
    )
    rate = eq7_num / eq7_den if eq7_den else 1.0
    return (bits_total + others) / 8, rate


SIZE_METRICS = [
    MetricSpec("size.bytes_dense", "size", "none", "bytes", "the uncompressed fp32 checkpoint"),
    MetricSpec("size.bytes*", "size", "lower", "bytes", "bytes of this model as stored"),
    MetricSpec("size.ratio*", "ratio", "higher", "x", "compression ratio against the dense fp32 model"),
    MetricSpec("size.rate_eq7", "ratio", "lower", "", "paper 002's Eq. 7 rate over clustered layers"),
]


@register_evaluation("size", SizeConfig, metrics=SIZE_METRICS, needs="parent")
def evaluate_size(model: nn.Module, cfg: SizeConfig, ctx: EvalContext) -> Metrics:
    from robustcompress.compression.format import save_compressed

    dense = checkpoint_bytes(dense_model(model, ctx.parent))
    with tempfile.TemporaryDirectory() as tmp:
        compressed = save_compressed(model, Path(tmp) / "model.rcz")
    plain = plain_weights_bytes(model)
    gz_dense = len(gzip.compress(dense, cfg.gzip_level))
    gz_plain = len(gzip.compress(plain, cfg.gzip_level))
    approx, rate = paper002_size(model)
    return {
        "size.bytes": len(checkpoint_bytes(model)),
        "size.bytes_dense": len(dense),
        "size.bytes_compressed": compressed,
        "size.ratio": len(dense) / compressed,
        "size.bytes_gzip": gz_plain,
        "size.ratio_gzip": gz_dense / gz_plain,
        "size.bytes_paper002": approx,
        "size.rate_eq7": rate,
    }
