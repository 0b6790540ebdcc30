"""Real int8: convert a model to an integer ONNX Runtime model that runs on the CPU.

Path (measured against torchao PT2E in docs/quantization.md): export the float model to ONNX,
ONNX Runtime's pre-processing (shape inference, batch-norm folding), static quantization in QDQ
format (int8 symmetric weights, uint8 asymmetric activations calibrated on training batches),
run by ONNX Runtime's CPU kernels (QLinearConv / QGemm after graph fusion).

`Int8Model` is an `nn.Module` whose state dict holds the ONNX graph (without tensors) as a uint8
buffer and every initializer as its own buffer in its integer dtype, so checkpoints and rcz
files store int8 weights, never fp32 copies.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from robustcompress.compression.clustering import ClusteredWeight
from robustcompress.compression.layers import bake_parametrizations, parametrizations_of
from robustcompress.compression.quantization.fake import ActFakeQuant
from robustcompress.compression.structure import add_structure, carry_metadata, register_structure
from robustcompress.errors import ConfigError, UnsupportedModelError
from robustcompress.stages import StageConfig, StageContext, register_stage

_DTYPES = {
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float32": torch.float32,
    "float16": torch.float16,
}


class Int8Model(nn.Module):
    """An ONNX Runtime int8 model as an nn.Module: forward(x) on the CPU, inputs in [0, 1].

    Buffers: `graph` (the ONNX model without its tensors) and `t0..tN` (the tensors, named in
    `names`). The runtime session is built on first use and rebuilt after a state-dict load.
    """

    # capabilities (robustcompress.capabilities): forward runs in ONNX Runtime, without autograd
    input_gradients = False
    runtime = "onnxruntime"

    def __init__(self, graph_size: int, tensors: list[tuple[str, str, list[int]]]):
        super().__init__()
        self.register_buffer("graph", torch.zeros(graph_size, dtype=torch.uint8))
        self.names = [name for name, _, _ in tensors]
        for i, (_, dtype, shape) in enumerate(tensors):
            self.register_buffer(f"t{i}", torch.zeros(shape, dtype=_DTYPES[dtype]))
        self._session = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.reset())

    def reset(self) -> None:
        self._session = None

    def onnx_bytes(self) -> bytes:
        """The complete quantized ONNX model (graph plus tensors)."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(self.graph.cpu().numpy().tobytes())
        for i, name in enumerate(self.names):
            proto.graph.initializer.append(
                numpy_helper.from_array(getattr(self, f"t{i}").cpu().numpy(), name)
            )
        return proto.SerializeToString()

    def differentiable_twin(self) -> nn.Module:
        """Its fake-quant twin: this model's own QDQ graph (same int8 weights, scales and zero
        points) run by PyTorch, rounding under a straight-through estimator, so white-box attacks
        can craft examples for it (robustcompress.compression.quantization.int8_twin)."""
        from robustcompress.compression.quantization.int8_twin import fake_quant_twin

        return fake_quant_twin(self.onnx_bytes())

    def stored_tensors(self) -> list[torch.Tensor]:
        """The initializers as stored: int8 weights, int32 biases, fp32 scales."""
        return [getattr(self, f"t{i}") for i in range(len(self.names))]

    def session(self):
        if self._session is None:
            self._session = ort_session(self.onnx_bytes())
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self.session()
        out = sess.run(None, {sess.get_inputs()[0].name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes held per dtype: an int8 model keeps its weights in int8 (fp32 only for scales)."""
        sizes: dict[str, int] = {}
        for t in self.stored_tensors():
            key = str(t.dtype).removeprefix("torch.")
            sizes[key] = sizes.get(key, 0) + t.numel() * t.element_size()
        return sizes

    def structure_params(self) -> dict:
        """The `int8` structure record: enough to rebuild empty buffers before loading weights."""
        tensors = [
            [n, str(getattr(self, f"t{i}").dtype).removeprefix("torch."), list(getattr(self, f"t{i}").shape)]
            for i, n in enumerate(self.names)
        ]
        return {"graph_size": int(self.graph.numel()), "tensors": tensors}

    def __deepcopy__(self, memo):
        new = Int8Model(self.graph.numel(), [(n, "uint8", [0]) for n in self.names])
        new.graph = self.graph.clone()
        for i in range(len(self.names)):
            setattr(new, f"t{i}", getattr(self, f"t{i}").clone())
        for key in ("_rc_spec", "_rc_structure"):
            if key in self.__dict__:
                object.__setattr__(new, key, copy.deepcopy(self.__dict__[key], memo))
        return new


def plain_float_copy(model: nn.Module) -> nn.Module:
    """A copy with every parametrization baked in and every activation quantizer removed."""
    plain = copy.deepcopy(model).cpu().eval()
    for module in plain.modules():
        bake_parametrizations(module)
        if isinstance(getattr(module, "input_quant", None), ActFakeQuant):
            del module.input_quant
            module._forward_pre_hooks.clear()
    return plain


def ort_session(onnx_bytes: bytes, threads: int | None = None):
    """A CPU ONNX Runtime session using `threads` intra-op threads (default: torch's count).

    Idle worker threads do not spin: a spinning pool steals the cores from PyTorch code running
    in the same process (evaluations, attacks, timing of other models).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, example: torch.Tensor, exporter: str = "torchscript") -> bytes:
    """ONNX bytes of a float model with a dynamic batch dimension."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # the TorchScript exporter warns on every call
            if exporter == "dynamo":
                prog = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    input_names=["x"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
                return prog.model_proto.SerializeToString()
            buf = io.BytesIO()
            torch.onnx.export(
                model,
                (example,),
                buf,
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
            )
            return buf.getvalue()
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; name the model part
        raise UnsupportedModelError(
            f"ONNX export failed ({type(exc).__name__}: {exc}); int8 needs an exportable model"
        ) from None


def _uses_per_tensor_clusters(model: nn.Module) -> bool:
    for m in model.modules():
        for p in parametrizations_of(m):
            if isinstance(p, ClusteredWeight) and p.groups == 1:
                return True
    return False


def to_int8(
    model: nn.Module,
    calibration: torch.Tensor,
    batch_size: int = 64,
    per_channel: bool | None = None,
    method: str = "minmax",
    exporter: str = "torchscript",
) -> Int8Model:
    """Convert `model` (float, clustered, pruned or fake-quantized) to an ONNX Runtime int8 model.

    per_channel None = per output channel, except per tensor when the model has per-tensor
    clusters (so each layer keeps at most K int8 values). Activations are recalibrated on
    `calibration` images with the chosen ONNX Runtime method (minmax, entropy, percentile).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if per_channel is None:
        per_channel = not _uses_per_tensor_clusters(model)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ConfigError(f"unknown int8 calibration {method!r}; choose one of {sorted(methods)}")
    plain = plain_float_copy(model)
    calibration = calibration.detach().float().cpu()
    batches = [calibration[i : i + batch_size].numpy() for i in range(0, len(calibration), batch_size)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            nxt = next(self._it, None)
            return None if nxt is None else {"x": nxt}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        fp32.write_bytes(export_onnx(plain, calibration[:2], exporter))
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
        )
        return int8_from_onnx(out.read_bytes())


def int8_from_onnx(data: bytes) -> Int8Model:
    """Split a quantized ONNX model into graph bytes + tensors and wrap it as an Int8Model."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(data)
    arrays = [(init.name, numpy_helper.to_array(init)) for init in proto.graph.initializer]
    del proto.graph.initializer[:]
    graph = proto.SerializeToString()
    specs = [(name, str(a.dtype), list(a.shape)) for name, a in arrays]
    for _, dtype, _ in specs:
        if dtype not in _DTYPES:
            raise UnsupportedModelError(
                f"int8 model holds a tensor of dtype {dtype}, which checkpoints cannot store"
            )
    model = Int8Model(len(graph), specs)
    model.graph.copy_(torch.from_numpy(np.frombuffer(graph, dtype=np.uint8).copy()))
    for i, (_, a) in enumerate(arrays):
        getattr(model, f"t{i}").copy_(torch.from_numpy(np.array(a, copy=True)))
    return model


class Int8Config(StageConfig):
    """Real int8 through ONNX Runtime; `batch_size` is the old name of `calibration_batch_size`."""

    calibration_images: int = Field(512, ge=1, description="training images used to calibrate activations")
    calibration_batch_size: int = Field(64, ge=1)
    per_channel: bool | None = None
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    exporter: Literal["torchscript", "dynamo"] = "torchscript"

    OLD_NAMES: ClassVar[dict[str, str]] = {"calibration_batch_size": "batch_size"}


@register_stage("int8", Int8Config)
def int8_stage(model: nn.Module, cfg: Int8Config, ctx: StageContext) -> nn.Module:
    calib = ctx.data.train.x[: cfg.calibration_images]
    qmodel = carry_metadata(
        model, to_int8(model, calib, cfg.calibration_batch_size, cfg.per_channel, cfg.method, cfg.exporter)
    )
    add_structure(qmodel, "int8", **qmodel.structure_params())
    ctx.log(f"converted to ONNX Runtime int8 ({sum(qmodel.weight_bytes().values())} tensor bytes)")
    return qmodel


@register_structure("int8")
def _replay_int8(model: nn.Module, params: dict) -> nn.Module:
    return Int8Model(params["graph_size"], [tuple(t) for t in params["tensors"]])
