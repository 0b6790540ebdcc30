"""Weather corruptions: snow, frost, fog and spatter (liquid or mud on the lens)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustcompress.corruptions import _ops
from robustcompress.errors import DataError


def snow(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Falling snow: thresholded zoomed noise, motion-blurred downwards, plus a whitened image.

    As the reference, the snow layer passes through 8 bits before and after its motion blur.
    """
    n, _, h, w = x.shape
    layer = _ops.normal((n, 1, h, w), g, x.device, mean=p["loc"], std=p["scale"])
    layer = _ops.clipped_zoom(layer, p["zoom"])
    layer = torch.where(layer < p["threshold"], torch.zeros_like(layer), layer)
    layer = _ops.truncate_levels(layer)
    angles = _ops.uniform((n,), g, "cpu", -135.0, -45.0, dtype=torch.float64)
    layer = _ops.round_levels(_ops.motion_blur(layer, p["blur_radius"], p["blur_sigma"], angles))
    mix = p["mix"]
    whitened = torch.maximum(x, _ops.to_gray(x) * 1.5 + 0.5).mul_(1 - mix)  # to_gray may return x
    out = torch.mul(x, mix).add_(whitened)
    return out.add_(layer).add_(torch.flip(layer, dims=(-2, -1))).clamp_(0, 1)


def fog(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Fog: a diamond-square plasma fractal added, then the image rescaled to its old maximum."""
    n, _, h, w = x.shape
    size = p.get("mapsize") or _ops.next_pow2(max(h, w))
    per = max(1, (1 << 22) // (size * size))  # bound memory: MNIST-C crops 28x28 out of 256x256 maps
    plasma = torch.cat(
        [
            _ops.plasma_fractal(min(per, n - i), size, p["decay"], g, x.device)[:, None, :h, :w]
            for i in range(0, n, per)
        ]
    ).to(x.dtype)
    strength = p["strength"]
    max_val = x.flatten(1).amax(1).view(n, 1, 1, 1)
    return ((x + strength * plasma) * max_val / (max_val + strength)).clamp_(0, 1)


# --------------------------------------------------------------------------------------------- frost


def procedural_frost(n: int, h: int, w: int, g: torch.Generator, device) -> torch.Tensor:
    """(n, 3, h, w) frost textures in [0, 1]: ice crystals on a mottled pale-blue film.

    A rough plasma fractal gives the film, sparse seeds smeared along two random directions give
    needle-like crystals; the mean intensity of the bank is about 0.5, brightest in blue.
    """
    size = _ops.next_pow2(max(h, w))
    film = _ops.plasma_fractal(n, size, 1.6, g, device)[:, None, :h, :w]
    seeds = (_ops.uniform((n, 1, h, w), g, device) > 0.9).float()
    crystals = torch.zeros_like(seeds)
    for _ in range(2):
        angles = _ops.uniform((n,), g, "cpu", -180.0, 180.0, dtype=torch.float64)
        crystals += _ops.motion_blur(seeds, 4, 2.7, angles)
    crystals = crystals / crystals.flatten(1).amax(1).clamp_min(1e-6).view(n, 1, 1, 1)
    grey = (0.2 + 0.45 * film + 0.75 * crystals).clamp(0, 1)
    tint = torch.tensor([0.82, 0.92, 1.0], device=device).view(1, 3, 1, 1)
    return (grey * tint).clamp_(0, 1)


@lru_cache(maxsize=8)
def frost_bank(side: int, device: str = "cpu") -> torch.Tensor:
    """Five fixed (3, side, side) procedural frost "photos", the stand-in for the reference's.

    Like the reference's photos they do not depend on the seed; the seed picks a photo and a crop
    for every image.
    """
    g = torch.Generator().manual_seed(20190328)
    return procedural_frost(5, side, side, g, "cpu").to(device)


def load_frost_images(paths: list[str | Path], scale: float = 0.2) -> list[torch.Tensor]:
    """Read frost photos (any PIL format) as (3, H, W) tensors in [0, 1], resized by `scale`.

    The reference resizes its photos by 0.2 before cropping 32x32 patches; pass another scale for
    other image sizes. Each photo must stay larger than the images it will cover.
    """
    out = []
    for path in paths:
        try:
            img = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read frost image {path}: {exc}; give PNG or JPEG photos") from None
        if scale != 1:
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR
            )
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    return out


def _crop_bank(bank: torch.Tensor, n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A random photo and a random h x w crop of it for each of n images (one gather)."""
    k, _, bh, bw = bank.shape
    pick = _ops.randint((n,), g, bank.device, 0, k)
    top = _ops.randint((n,), g, bank.device, 0, bh - h)
    left = _ops.randint((n,), g, bank.device, 0, bw - w)
    rows = (top[:, None] + torch.arange(h, device=bank.device))[:, :, None]
    cols = (left[:, None] + torch.arange(w, device=bank.device))[:, None, :]
    return bank.permute(0, 2, 3, 1)[pick[:, None, None], rows, cols].permute(0, 3, 1, 2)


def _crop_frost(images: list[torch.Tensor], n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    picks = _ops.randint((n,), g, "cpu", 0, len(images)).tolist()
    crops = []
    for k in picks:
        img = images[k]
        if img.shape[1] <= h or img.shape[2] <= w:
            raise DataError(
                f"a frost image of {img.shape[2]}x{img.shape[1]} is too small for {w}x{h} images; "
                "give larger photos or a larger frost scale"
            )
        top = int(_ops.randint((1,), g, "cpu", 0, img.shape[1] - h))
        left = int(_ops.randint((1,), g, "cpu", 0, img.shape[2] - w))
        crops.append(img[:, top : top + h, left : left + w])
    return torch.stack(crops)


def frost(x: torch.Tensor, p: dict, g: torch.Generator, frost_images: list[torch.Tensor] | None = None):
    """Frost on the lens: image * a + frost texture * b (a random crop per image)."""
    n, _, h, w = x.shape
    if frost_images:
        texture = _crop_frost(frost_images, n, h, w, g).to(x.device, x.dtype)
    else:
        side = max(256, _ops.next_pow2(2 * max(h, w)))
        texture = _crop_bank(frost_bank(side, str(x.device)), n, h, w, g).to(x.dtype)
    if x.shape[1] == 1:
        texture = _ops.to_gray(texture)
    return (p["image_coef"] * x + p["frost_coef"] * texture).clamp_(0, 1)


# --------------------------------------------------------------------------------------------- spatter

WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise
MUD = (63 / 255, 42 / 255, 20 / 255)  # brown


def _box3(x: torch.Tensor) -> torch.Tensor:
    return _ops.shifted_sum(x, np.full((3, 3), 1 / 9))


def _dilate3(x: torch.Tensor) -> torch.Tensor:
    """3x3 dilation of 0/1 uint8 masks (N, 1, H, W) (outside the image counts as 0).

    Each row pixel ORs in its two neighbours as shifts of the flattened image (long contiguous runs,
    where shifts of 31-pixel rows are slow for bytes), masked so no row takes from the next; then
    each row ORs in the rows above and below.
    """
    h, w = x.shape[-2:]
    not_last = (torch.arange(h * w - 1, device=x.device) % w != w - 1).to(x.dtype)
    flat = x.reshape(*x.shape[:-2], h * w)
    y = flat.clone()
    y[..., 1:] |= flat[..., :-1] & not_last  # from the left neighbour
    y[..., :-1] |= flat[..., 1:] & not_last  # from the right neighbour
    y = y.view_as(x)
    out = y.clone()
    out[..., 1:, :] |= y[..., :-1, :]
    out[..., :-1, :] |= y[..., 1:, :]
    return out


def _equalize(levels: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of integer levels 0..255 per image (OpenCV's equalizeHist)."""
    n = levels.shape[0]
    flat = levels.flatten(1).long()
    hist = torch.zeros(n, 256, device=levels.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    cdf = hist.cumsum(1)
    total = flat.shape[1]
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(total))).amin(1, keepdim=True)
    lut = torch.round((cdf - cdf_min).clamp_min(0) * 255 / (total - cdf_min).clamp_min(1))
    return lut.gather(1, flat).view_as(levels)


def spatter(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Liquid (mild severities) or mud (strong) splashed on the lens.

    Liquid: thresholded blurred noise makes the drops; their shading grows with the distance from
    the drop's rim (capped at 20 px, equalised, embossed), tinted pale turquoise and added. The
    reference finds rims with Canny; here a rim is a drop pixel next to a dry one, and the distance
    is the chessboard distance. Mud: the drop mask, blurred and thresholded at 0.8, replaces the
    image by brown.
    """
    n, c, h, w = x.shape
    liquid = _ops.normal((n, 1, h, w), g, x.device, mean=p["loc"], std=p["scale"])
    liquid = _ops.gaussian_blur(liquid, p["sigma"])
    liquid.masked_fill_(liquid < p["threshold"], 0)
    if not p["mud"]:
        wet = (liquid > 0).to(torch.uint8)
        rim = _dilate3(wet) & _dilate3(1 - wet)  # both drops and dry pixels around
        # chessboard distance to the nearest rim pixel, capped at 20: the number of dilations of
        # the rim that still miss a pixel, i.e. steps - (how often it was reached). 3x3 dilations
        # of uint8 masks (a quarter of the memory of floats); stop once every pixel is reached.
        reached, hits, steps = rim, torch.zeros_like(rim), 0
        while steps < 20:
            steps += 1
            hits.add_(reached)
            if bool(reached.min()):
                break
            reached = _dilate3(reached)
        dist = hits.to(x.dtype).neg_().add_(steps)
        dist.masked_fill_(rim.flatten(1).amax(1).view(n, 1, 1, 1) == 0, 20.0)
        dist = _box3(dist).add_(1e-4).floor_().clamp_(0, 255)
        dist = _equalize(dist)
        emboss = np.array([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = _ops.shifted_sum(dist, emboss).round_().clamp_(0, 255)
        dist = _box3(dist)
        m = liquid.clamp_(0, 1).mul_(dist)
        m.div_(m.flatten(1).amax(1).clamp_min(1e-12).view(n, 1, 1, 1)).mul_(p["intensity"])
        colour = torch.tensor(p.get("color", WATER), dtype=x.dtype).tolist()  # the float32 values
        out = torch.empty_like(x)
        for ch, value in enumerate(colour):  # per channel: faster than broadcasting (N, 1) by (1, 3)
            torch.mul(m[:, 0], value, out=out[:, ch]).add_(x[:, ch])
        return out.clamp_(0, 1)
    mask = (liquid > p["threshold"]).to(x.dtype)
    m = _ops.gaussian_blur(mask, p["intensity"])
    m.masked_fill_(m < 0.8, 0)
    colour = torch.tensor(p.get("color", MUD), dtype=x.dtype).tolist()
    if len(colour) != c:
        colour = colour[:1] if c == 1 else colour * c
    keep = 1 - m
    out = torch.empty_like(x)
    for ch, value in enumerate(colour):  # x (1 - m) + colour m, per channel as above
        torch.mul(x[:, ch], keep[:, 0], out=out[:, ch]).add_(m[:, 0] * value)
    return out.clamp_(0, 1)
