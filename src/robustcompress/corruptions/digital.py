"""Digital corruptions: brightness, contrast, saturation, elastic warps, pixelation and JPEG."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from robustcompress.corruptions import _jpeg, _ops
from robustcompress.errors import ConfigError


def brightness(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Raise the HSV value by `shift` (hue and saturation kept)."""
    return _ops.shift_value(x, p["shift"]).clamp_(0, 1)


def contrast(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Pull every channel towards its own per-image mean by `factor`."""
    f = p["factor"]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return torch.add(mean * (1 - f), x, alpha=f).clamp_(0, 1)  # (x - mean) f + mean in one pass


def saturate(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """HSV saturation S -> clip(S * scale + shift)."""
    return _ops.scale_saturation(x, p["scale"], p["shift"]).clamp_(0, 1)


def elastic_transform(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """A random affine warp of three control points, then a smooth random displacement field.

    Affine: the points centre +- size//3 move by up to `affine` px (bilinear, reflected borders).
    Elastic: uniform noise in [-1, 1] blurred by a Gaussian of `sigma` (truncated at 3 sigma) and
    scaled by `alpha` displaces every pixel (bilinear, half-sample reflection).
    """
    n, _, h, w = x.shape
    cy, cx = h // 2, w // 2
    sq = min(h, w) // 3
    pts1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    shift = _ops.uniform((n, 3, 2), g, "cpu", -p["affine"], p["affine"], dtype=torch.float64)
    pts2 = pts1 + shift
    a = torch.cat([pts1, torch.ones(3, 1, dtype=torch.float64)], dim=1)  # (3, 3): [px, py, 1]
    m = torch.linalg.solve(a, pts2).transpose(1, 2)  # (N, 2, 3): M [px, py, 1] = [px', py']
    lin_inv = torch.linalg.inv(m[:, :, :2])
    inv = torch.cat([lin_inv, -lin_inv @ m[:, :, 2:]], dim=2)
    x = _ops.affine_sample(x, inv.to(x.dtype) if x.dtype == torch.float64 else inv.float(), "reflect101")
    field = _ops.uniform((n, 2, h, w), g, x.device, -1.0, 1.0, dtype=x.dtype)
    if p["sigma"] > 0:
        field = _ops.gaussian_blur(field, p["sigma"], mode="reflect", truncate=3.0)
    field.mul_(p["alpha"])
    rows, cols = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=x.dtype),
        torch.arange(w, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    return _ops.sample(x, rows + field[:, 1], cols + field[:, 0], "reflect").clamp_(0, 1)


def pixelate(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Box down-sampling to `scale` of the size and box up-sampling back (PIL BOX, 8-bit passes)."""
    h, w = x.shape[-2:]
    levels = x.clamp(0, 1).mul_(255).add_(0.5).floor_()
    return _ops.box_pixelate_levels(levels, int(h * p["scale"]), int(w * p["scale"])).div_(255)


def jpeg_compression(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """A JPEG round trip at `quality` (4:2:0 chroma, the IJG tables), in batched torch by default.

    The torch codec (`_jpeg.py`) redoes libjpeg's lossy arithmetic and matches Pillow's libjpeg-turbo
    pixel for pixel; `codec="pillow"` in the parameters runs Pillow itself instead.
    """
    u8 = x.clamp(0, 1).mul_(255).round_().to(torch.int16).to(torch.uint8)  # via int16: faster casts
    return jpeg_round_trip(u8, int(p["quality"]), p.get("codec", "torch")).to(x.dtype).div_(255)


CODECS = ("torch", "pillow")


def jpeg_round_trip(u8: torch.Tensor, quality: int, codec: str = "torch") -> torch.Tensor:
    """Decode(encode(images)) for uint8 images (N, C, H, W), C = 1 or 3, with libjpeg's defaults.

    codec "torch" (any device, batched) and "pillow" (per image, on the CPU) give the same pixels
    with the libjpeg-turbo that Pillow ships (benchmarks/bench_corruptions_jpeg.py measures it).
    """
    if codec == "torch":
        return _jpeg.jpeg_round_trip(u8, quality)
    if codec != "pillow":
        raise ConfigError(f"unknown JPEG codec {codec!r}; choose from {', '.join(CODECS)}")
    arr = u8.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    mode = "L" if arr.shape[-1] == 1 else "RGB"

    def code(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            buf = io.BytesIO()
            img = arr[i, ..., 0] if mode == "L" else arr[i]
            Image.fromarray(img, mode=mode).save(buf, "JPEG", quality=quality)
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert(mode))
            out[i] = dec[..., None] if mode == "L" else dec

    # Pillow releases the GIL while it encodes and decodes: one thread per core
    workers = max(1, min(os.cpu_count() or 1, len(arr) // 64))
    step = -(-len(arr) // workers)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda lo: code(lo, min(lo + step, len(arr))), range(0, len(arr), step)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(u8.device)
