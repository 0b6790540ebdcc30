"""The fake-quant twin of an int8 model: its own QDQ graph run in PyTorch, differentiable.

Why: an `Int8Model` runs in ONNX Runtime without autograd, so white-box attacks cannot see it.
Its QDQ graph already says exactly what it computes: every QuantizeLinear / DequantizeLinear
pair with the int8 model's own scales and zero points, its int8 weights, its batch-norm folding.
Running that graph with torch ops gives a float model with the *same* quantization (not the float
model before conversion, whose activation ranges ONNX Runtime recalibrated), and rounding with a
straight-through estimator gives it useful input gradients: d round(v)/dv = 1, while saturation
keeps a zero gradient outside the integer range (as torch.fake_quantize_per_tensor_affine), so a
ReLU that ONNX Runtime fused into a uint8 range still blocks the gradient where it should.

The twin differs from the int8 model only where ONNX Runtime's integer kernels round an int32
accumulator differently from a float convolution followed by QuantizeLinear: a few ulps of one
quantization step, which flips few predictions (tests/test_attacks_eval.py measures it).

Operators covered: those the int8 path produces for CNNs (Conv, Gemm, MatMul, pooling, Add, Mul,
Sub, Div, Relu, Clip, Flatten, Reshape, Concat, ...). A graph with another operator raises
UnsupportedModelError, and the adversarial evaluation falls back to transfer and Square.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.errors import UnsupportedModelError


def _round_ste(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.round(v) - v).detach()


def _along(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-axis parameter (scale, zero point) shaped to broadcast along `axis` of an ndim tensor."""
    if t.ndim == 0 or t.numel() == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return t.reshape(shape)


_INT_RANGE = {
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-32768, 32767),
    torch.int32: (-(2**31), 2**31 - 1),
}


class QDQTwin(nn.Module):
    """An ONNX QDQ graph evaluated with torch ops; quantized values are held as whole floats."""

    def __init__(self, onnx_bytes: bytes):
        super().__init__()
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(onnx_bytes)
        graph = proto.graph
        self._names: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            array = numpy_helper.to_array(init).copy()
            self.register_buffer(f"c{i}", torch.from_numpy(array))
            self._names[init.name] = f"c{i}"
        self.input_name = next(i.name for i in graph.input if i.name not in self._names)
        self.output_name = graph.output[0].name
        self.nodes = []
        for node in graph.node:
            if node.op_type not in _OPS:
                raise UnsupportedModelError(
                    f"the int8 model's graph has operator {node.op_type!r}, which its fake-quant twin does "
                    f"not implement (it covers {', '.join(sorted(_OPS))})"
                )
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                value = attrs.get("value")
                if value is None:
                    raise UnsupportedModelError("the twin supports Constant nodes holding a tensor only")
                buf = f"c{len(self._names)}"
                self.register_buffer(buf, torch.from_numpy(numpy_helper.to_array(value).copy()))
                self._names[node.output[0]] = buf
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor | None] = {"": None, self.input_name: x.float()}
        for name, buf in self._names.items():
            values[name] = getattr(self, buf)
        for op, inputs, outputs, attrs in self.nodes:
            args = [values[i] for i in inputs]
            out = _OPS[op](args, attrs)
            for name, value in zip(outputs, out if isinstance(out, tuple) else (out,)):
                values[name] = value
        return values[self.output_name]


# -- operators: (inputs, attributes) -> output ------------------------------------------------------


def _quantize(args, attrs):
    x, scale = args[0], args[1].float()
    zp = args[2] if len(args) > 2 and args[2] is not None else torch.tensor(0, dtype=torch.uint8)
    lo, hi = _INT_RANGE[zp.dtype]
    axis = attrs.get("axis", 1)
    q = _round_ste(x / _along(scale, axis, x.ndim)) + _along(zp.float(), axis, x.ndim)
    return q.clamp(lo, hi)


def _dequantize(args, attrs):
    x, scale = args[0].float(), args[1].float()
    zp = args[2].float() if len(args) > 2 and args[2] is not None else torch.zeros(())
    axis = attrs.get("axis", 1)
    return (x - _along(zp, axis, x.ndim)) * _along(scale, axis, x.ndim)


def _pads(attrs, ndim_spatial: int) -> tuple[list[int], bool]:
    """ONNX pads [begin..., end...] as F.pad's reversed pairs, and whether they are symmetric."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModelError("the twin supports explicit pads only (auto_pad NOTSET)")
    pads = list(attrs.get("pads", [0] * 2 * ndim_spatial))
    begin, end = pads[:ndim_spatial], pads[ndim_spatial:]
    flat = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]
    return flat, begin == end


def _conv(args, attrs):
    x, w = args[0], args[1].float()
    b = args[2].float() if len(args) > 2 and args[2] is not None else None
    spatial = w.ndim - 2
    flat, symmetric = _pads(attrs, spatial)
    padding = flat[::2][::-1] if symmetric else 0
    if not symmetric:
        x = F.pad(x, flat)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return conv(
        x,
        w,
        b,
        stride=attrs.get("strides", 1),
        padding=padding,
        dilation=attrs.get("dilations", 1),
        groups=attrs.get("group", 1),
    )


def _pool(kind: str):
    def run(args, attrs):
        x = args[0]
        kernel = attrs["kernel_shape"]
        flat, symmetric = _pads(attrs, len(kernel))
        ceil = bool(attrs.get("ceil_mode", 0))
        strides = attrs.get("strides", [1] * len(kernel))
        if kind == "max":
            if not symmetric:
                x = F.pad(x, flat, value=-math.inf)
            padding = flat[::2][::-1] if symmetric else 0
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
            return pool(x, kernel, strides, padding, attrs.get("dilations", 1), ceil_mode=ceil)
        if not symmetric:
            raise UnsupportedModelError("the twin supports symmetric AveragePool padding only")
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
        include = bool(attrs.get("count_include_pad", 0))
        return pool(x, kernel, strides, flat[::2][::-1], ceil_mode=ceil, count_include_pad=include)

    return run


def _gemm(args, attrs):
    a, b = args[0], args[1].float()
    a = a.transpose(0, 1) if attrs.get("transA", 0) else a
    b = b.transpose(0, 1) if attrs.get("transB", 0) else b
    out = attrs.get("alpha", 1.0) * (a @ b)
    if len(args) > 2 and args[2] is not None:
        out = out + attrs.get("beta", 1.0) * args[2].float()
    return out


def _clip(args, attrs):
    lo = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
    x = args[0]
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


def _reshape(args, attrs):
    x, shape = args[0], [int(s) for s in args[1].tolist()]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _float(fn: Callable) -> Callable:
    return lambda args, attrs: fn(*(a.float() for a in args))


_OPS: dict[str, Callable] = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _float(torch.matmul),
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda args, attrs: args[0].mean(dim=tuple(range(2, args[0].ndim)), keepdim=True),
    "GlobalMaxPool": lambda args, attrs: args[0].amax(dim=tuple(range(2, args[0].ndim)), keepdim=True),
    "Add": _float(torch.add),
    "Sub": _float(torch.sub),
    "Mul": _float(torch.mul),
    "Div": _float(torch.div),
    "Relu": lambda args, attrs: F.relu(args[0]),
    "LeakyRelu": lambda args, attrs: F.leaky_relu(args[0], attrs.get("alpha", 0.01)),
    "Sigmoid": lambda args, attrs: torch.sigmoid(args[0]),
    "HardSigmoid": lambda args, attrs: (attrs.get("alpha", 0.2) * args[0] + attrs.get("beta", 0.5)).clamp(
        0, 1
    ),
    "Tanh": lambda args, attrs: torch.tanh(args[0]),
    "Clip": _clip,
    "Identity": lambda args, attrs: args[0],
    "Flatten": lambda args, attrs: args[0].reshape(math.prod(args[0].shape[: attrs.get("axis", 1)]), -1),
    "Reshape": _reshape,
    "Concat": lambda args, attrs: torch.cat([a.float() for a in args], dim=attrs["axis"]),
    "Softmax": lambda args, attrs: torch.softmax(args[0], dim=attrs.get("axis", -1)),
    "Constant": None,  # folded into buffers at build time
}


def fake_quant_twin(onnx_bytes: bytes) -> QDQTwin:
    """The differentiable twin of a quantized (QDQ) ONNX model, in eval mode on the CPU."""
    return QDQTwin(onnx_bytes).eval()
