"""Checked ONNX exports: a file is kept only if ONNX Runtime predicts like the model it came from.

`export_onnx_checked` writes a float ONNX model of any float model (dense, masked, hardened
channel-pruned, clustered, fake-quantized: parametrizations are baked in, activation quantizers
stay in the graph). `export_int8_checked` writes the ONNX Runtime int8 model as a checkpoint
folder with model.onnx beside it. Both write to a temporary name, run the written file in a fresh
ONNX Runtime session on a calibration batch, compare with the reference and rename only when the
comparison passes; otherwise nothing is left at the output path and `ExportParityError` names
the mismatch. Both report the file size and ONNX Runtime latency (one thread).

Why a check at all: exporters translate operations one by one, and a wrong translation (an
unsupported op emulated differently, a hook dropped, a shape frozen) gives a file that loads and
runs but predicts something else.
"""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcompress.capabilities import native_onnx
from robustcompress.compression.layers import bake_parametrizations
from robustcompress.compression.quantization.fake import ActFakeQuant
from robustcompress.errors import UnsupportedModelError

FLOAT_ATOL = 1e-4
"""Float graphs: max |logit difference| <= FLOAT_ATOL x max(1, max |reference logit|)."""
QUANT_ATOL = 1e-2
"""Graphs that fake-quantize activations: a value on a rounding tie, which float summation order
resolves either way, moves by one quantization step (measured on cnn8 8-bit: 1e-3 of the logit
scale on 3 of 512 images, the others within the float tolerance)."""
INT8_ATOL = 1e-5
"""int8: the written file against the converted in-memory int8 model (the same ONNX Runtime graph)."""


class ExportParityError(UnsupportedModelError):
    """The exported file does not predict like the model (nothing is left at the output path)."""


@dataclass(frozen=True)
class Parity:
    """How the exported file's logits compare with the reference on the calibration images."""

    images: int
    argmax_agree: int
    max_abs_diff: float
    tolerance: float
    reference: str

    @property
    def ok(self) -> bool:
        return self.argmax_agree == self.images and self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        return (
            f"{self.images - self.argmax_agree} of {self.images} calibration images get another class, "
            f"max |logit difference| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}) "
            f"against {self.reference}"
        )


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and measured; `as_dict()` is the CLI's --json object."""

    format: str
    path: str
    bytes: int
    onnx_bytes: int
    parity: Parity
    latency_ms_batch1: float
    latency_ms_batch: float
    latency_batch_size: int
    extra: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("parity", "extra")}
        out.update({f"parity_{k}": v for k, v in asdict(self.parity).items()})
        out["parity_ok"] = self.parity.ok
        out.update(self.extra)
        return out


def quantizes_activations(model: nn.Module) -> bool:
    return any(isinstance(m, ActFakeQuant) for m in model.modules())


def float_export_copy(model: nn.Module) -> nn.Module:
    """A CPU copy in eval mode with every parametrization baked in (masks, clusters, weight
    quantizers become plain weights holding the values the forward pass uses). Activation
    quantizers stay: they are part of what the model computes."""
    plain = copy.deepcopy(model).cpu().eval()
    for module in plain.modules():
        bake_parametrizations(module)
    return plain


def onnx_model_bytes(model: nn.Module, example: torch.Tensor, exporter: str = "torchscript") -> bytes:
    """The model's own ONNX bytes when it is an ONNX Runtime model, else a float export."""
    from robustcompress.compression.quantization.int8 import export_onnx

    native = native_onnx(model)
    if native is not None:
        return native
    return export_onnx(float_export_copy(model), example[:2].detach().float().cpu(), exporter)


@torch.no_grad()
def torch_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The model's logits on the CPU in eval mode (the model is left as it was)."""
    on_cpu = all(t.device.type == "cpu" for t in model.state_dict().values())
    ref = model if on_cpu else copy.deepcopy(model).cpu()
    was_training = ref.training
    ref.eval()
    try:
        return torch.cat([ref(x[i : i + batch_size].cpu()).float() for i in range(0, len(x), batch_size)])
    finally:
        ref.train(was_training)


def session_logits(session, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    name = session.get_inputs()[0].name
    outs = [
        torch.from_numpy(session.run(None, {name: x[i : i + batch_size].float().cpu().numpy()})[0])
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs)


def compare(out: torch.Tensor, ref: torch.Tensor, atol: float, reference: str) -> Parity:
    """Argmax agreement and max |difference|; the tolerance scales with the logits' magnitude."""
    if out.shape != ref.shape:
        return Parity(len(ref), 0, float("inf"), 0.0, f"{reference} (output shape {tuple(out.shape)})")
    diff = (out - ref).abs().max().item() if out.numel() else 0.0
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    agree = int((out.argmax(1) == ref.argmax(1)).sum().item())
    return Parity(len(ref), agree, float(diff), atol * scale, reference)


def ort_latency_ms(session, x: torch.Tensor, runs: int = 5) -> float:
    """Median wall time of `runs` calls on batch x (after one warm-up call)."""
    feed = {session.get_inputs()[0].name: x.float().cpu().numpy()}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _latencies(onnx: bytes, x: torch.Tensor, runs: int) -> dict[str, Any]:
    from robustcompress.compression.quantization.int8 import ort_session

    session = ort_session(onnx, threads=1)
    return {
        "latency_ms_batch1": ort_latency_ms(session, x[:1], runs),
        "latency_ms_batch": ort_latency_ms(session, x, runs),
        "latency_batch_size": len(x),
    }


def _check_calibration(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) == 0:
        raise UnsupportedModelError(
            "export needs a calibration batch of at least one image (a tensor N x C x H x W in [0, 1])"
        )
    return x.detach().float().cpu()


def export_onnx_checked(
    model: nn.Module,
    calibration_x: torch.Tensor,
    path: str | Path,
    atol: float | None = None,
    exporter: str = "torchscript",
    latency_runs: int = 5,
) -> ExportReport:
    """Write `model` as an ONNX file at `path`, kept only if ONNX Runtime predicts like PyTorch.

    The reference is the model's own forward on the CPU (parametrizations and activation
    quantizers applied). atol None: FLOAT_ATOL, or QUANT_ATOL when activations are fake-quantized.
    """
    from robustcompress.compression.quantization.int8 import ort_session

    x = _check_calibration(calibration_x)
    path = Path(path)
    if atol is None:
        atol = QUANT_ATOL if quantizes_activations(model) else FLOAT_ATOL
    data = onnx_model_bytes(model, x, exporter)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        written = tmp.read_bytes()  # check the file as written, not the bytes in memory
        parity = compare(
            session_logits(ort_session(written), x),
            torch_logits(model, x),
            atol,
            "the PyTorch model's logits",
        )
        if not parity.ok:
            raise ExportParityError(
                f"ONNX export does not predict like the model: {parity.describe()}; nothing was "
                f"written at {path}. The exporter translated some operation differently; keep the "
                "PyTorch model (--format rcz) or report the model's layers"
            )
        latency = _latencies(written, x, latency_runs)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(
        format="onnx",
        path=str(path),
        bytes=len(written),
        onnx_bytes=len(written),
        parity=parity,
        **latency,
        extra={},
    )


def export_int8_checked(
    model: nn.Module,
    calibration_x: torch.Tensor,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    atol: float = INT8_ATOL,
    latency_runs: int = 5,
) -> ExportReport:
    """Write the ONNX Runtime int8 model of `model` as a checkpoint folder `out` (model.onnx beside).

    A float model is converted first (activation ranges calibrated on `calibration_x`); an int8
    model is written as it is. Check: the written model.onnx and the reloaded checkpoint both give
    the converted model's logits (within `atol`, same argmax). Reported, not checked: argmax
    agreement with the float model (int8 rounding legitimately flips near-tie images).
    """
    from robustcompress.checkpoint import load_checkpoint, save_checkpoint
    from robustcompress.compression.quantization.int8 import ort_session, to_int8
    from robustcompress.compression.structure import add_structure, carry_metadata

    x = _check_calibration(calibration_x)
    out = Path(out)
    extra: dict[str, Any] = {}
    qmodel = model
    if native_onnx(model) is None:
        float_logits = torch_logits(model, x)
        qmodel = carry_metadata(model, to_int8(model, x))
        add_structure(qmodel, "int8", **qmodel.structure_params())
    onnx = native_onnx(qmodel)
    ref = torch_logits(qmodel, x)  # an int8 model's forward runs its ONNX graph in ONNX Runtime
    if qmodel is not model:
        agree = int((ref.argmax(1) == float_logits.argmax(1)).sum().item())
        extra = {"float_argmax_agree": agree, "float_max_abs_diff": (ref - float_logits).abs().max().item()}

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp = work / out.name
    try:
        save_checkpoint(tmp, qmodel, meta or {}, extra_files={"model.onnx": onnx})
        written = (tmp / "model.onnx").read_bytes()
        reloaded, _ = load_checkpoint(tmp)
        reference = "the converted int8 model (in memory)"
        checks = [
            compare(session_logits(ort_session(written), x), ref, atol, reference),
            compare(torch_logits(reloaded, x), ref, atol, reference),
        ]
        failed = [p for p in checks if not p.ok]
        if failed:
            what = ["model.onnx", "the reloaded checkpoint"][checks.index(failed[0])]
            raise ExportParityError(
                f"int8 export does not predict like the converted model: {what}: "
                f"{failed[0].describe()}; nothing was written at {out}"
            )
        parity = max(checks, key=lambda p: p.max_abs_diff)
        latency = _latencies(written, x, latency_runs)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(
        format="int8",
        path=str(out),
        bytes=(out / "model.safetensors").stat().st_size,
        onnx_bytes=len(written),
        parity=parity,
        **latency,
        extra=extra,
    )


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename the finished folder into place (beside `tmp`'s folder), replacing an older export only now."""
    if directory.exists():
        os.replace(directory, tmp.parent / f"{directory.name}.old")
    os.replace(tmp, directory)
