"""The rcz file: one compressed file per model, lossless with respect to the in-memory model.

Layout: b"RCZ1", a little-endian uint32 length, the zstd-compressed JSON header, then the payload
streams back to back. The header holds the model spec and structure records (how to rebuild the
architecture, as checkpoints do) and, per state-dict tensor, its dtype, shape and streams
(see codec.py). Fake-quantized weights are stored as their integer codes (the float weight is
codes x scale), clustered weights as codebook + index map, int8 models as their int8 tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from robustcompress.checkpoint import build_from_meta, spec_of, structure_of
from robustcompress.compression.clustering import ClusteredWeight
from robustcompress.compression.format.codec import decode_array, encode_array
from robustcompress.compression.layers import parametrizations_of
from robustcompress.compression.quantization.fake import WeightFakeQuant
from robustcompress.errors import CheckpointError
from robustcompress.fileio import atomic_write

MAGIC = b"RCZ1"


def _code_transforms(model: nn.Module) -> dict[str, dict[str, Any]]:
    """State-dict keys of fake-quantized float weights to store as integer codes, with their scale key."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        plist = parametrizations_of(module)
        if plist and isinstance(plist[0], WeightFakeQuant):
            prefix = f"{name}." if name else ""
            out[f"{prefix}parametrizations.weight.original"] = {
                "scale": f"{prefix}parametrizations.weight.0.scale",
                "module": name,
            }
    return out


def _idempotent_originals(model: nn.Module) -> dict[str, torch.Tensor]:
    """Originals that may be replaced by the effective weight without changing the model.

    A pruning mask m(w) = w * mask is idempotent: storing m(w) (exact zeros) instead of the dense
    original gives the same forward pass and lets the bitmap coder see the sparsity.
    """
    out: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        plist = parametrizations_of(module)
        if not plist or any(isinstance(p, WeightFakeQuant | ClusteredWeight) for p in plist):
            continue
        with torch.no_grad():
            effective = module.weight.detach()
            again = effective
            for p in plist:
                again = p(again)
        if torch.equal(again, effective):
            out[
                f"{name}.parametrizations.weight.original" if name else "parametrizations.weight.original"
            ] = effective
    return out


def encode_state(model: nn.Module) -> tuple[list[dict[str, Any]], list[bytes]]:
    state = {**model.state_dict(), **_idempotent_originals(model)}
    transforms = _code_transforms(model)
    entries, payloads = [], []
    for key, tensor in state.items():
        t = tensor.detach().cpu()
        entry: dict[str, Any] = {"key": key}
        if key in transforms:
            wq = parametrizations_of(model.get_submodule(transforms[key]["module"]))[0]
            w = t * wq.keep.cpu() if wq.keep is not None else t
            codes = _codes(wq, w)
            entry["codes_of"] = transforms[key]["scale"]
            entry["float_dtype"] = str(t.dtype).removeprefix("torch.")
            t = codes
        head, streams = encode_array(t.numpy())
        entry.update(head)
        entries.append(entry)
        payloads.extend(streams)
    return entries, payloads


def _codes(wq: WeightFakeQuant, w: torch.Tensor) -> torch.Tensor:
    s = wq.scale.detach().cpu()
    s = s.view(-1, *([1] * (w.dim() - 1))) if wq.groups > 1 else s.view(*([1] * w.dim()))
    if wq.bits == 1:
        return torch.sign(w).to(torch.int8)
    q = torch.clamp((w / s).round(), -wq.qmax, wq.qmax)
    return q.to(torch.int8 if wq.bits <= 8 else torch.int16)


def save_compressed(model: nn.Module, path: str | Path, extra: dict | None = None) -> int:
    """Write `model` as one rcz file (atomically); returns the file size in bytes."""
    path = Path(path)
    entries, payloads = encode_state(model)
    header = {
        "version": 1,
        "model": spec_of(model),
        "structure": structure_of(model),
        "tensors": entries,
        "extra": extra or {},
    }
    # sorted keys: a model loaded from a checkpoint has its structure records in the file's (sorted)
    # order, one kept in memory in insertion order; the same model must give the same bytes
    text = json.dumps(header, separators=(",", ":"), sort_keys=True)
    head = zstandard.ZstdCompressor(level=19).compress(text.encode())
    with atomic_write(path, "wb") as f:
        f.write(MAGIC + len(head).to_bytes(4, "little") + head)
        for p in payloads:
            f.write(p)
    return path.stat().st_size


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    data = Path(path).read_bytes()
    if data[:4] != MAGIC or len(data) < 8:
        raise CheckpointError(
            f"{path} is not an rcz file (bad magic); write one with save_compressed / export --format rcz"
        )
    size = int.from_bytes(data[4:8], "little")
    try:
        header = json.loads(zstandard.ZstdDecompressor().decompress(data[8 : 8 + size]))
    except (zstandard.ZstdError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt rcz header ({exc})") from None
    return header, data[8 + size :]


def load_compressed(path: str | Path) -> nn.Module:
    """Rebuild the model saved by save_compressed (eval mode, CPU)."""
    header, blob = read_header(path)
    model = build_from_meta(header)
    state: dict[str, torch.Tensor] = {}
    pos = 0
    coded: list[dict[str, Any]] = []
    for entry in header["tensors"]:
        payloads = []
        for stream in entry["streams"]:
            payloads.append(blob[pos : pos + stream["size"]])
            pos += stream["size"]
        if pos > len(blob):
            raise CheckpointError(f"{path} is truncated; write it again")
        state[entry["key"]] = torch.from_numpy(decode_array(entry, payloads))
        if "codes_of" in entry:
            coded.append(entry)
    for entry in coded:  # integer codes back to float weights: codes x scale
        codes, scale = state[entry["key"]], state[entry["codes_of"]]
        view = (
            scale.view(-1, *([1] * (codes.dim() - 1)))
            if scale.numel() > 1
            else scale.view(*([1] * codes.dim()))
        )
        state[entry["key"]] = (codes.to(getattr(torch, entry["float_dtype"])) * view).contiguous()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not fit the rebuilt model ({exc})") from None
    return model.eval()
