"""Batched building blocks shared by the corruptions: filters, resampling, colour, random draws.

Every function works on float tensors (N, C, H, W) on any device. Linear filters whose boundary
rules matter (Gaussian blurs with SciPy's modes) are built once as small dense (n x n) operators
from SciPy itself and applied as two matrix products, so the batched result equals the per-image
SciPy filter to float precision while running as one BLAS call for the whole batch.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------
# random draws: always from the caller's generator, moved to the images' device


def uniform(shape, g: torch.Generator, device, low: float = 0.0, high: float = 1.0, dtype=torch.float32):
    u = torch.rand(shape, generator=g, device=g.device, dtype=dtype)
    if (low, high) != (0.0, 1.0):  # in place: the same numbers as low + (high - low) * u
        u.mul_(high - low).add_(low)
    return u.to(device)


def normal(shape, g: torch.Generator, device, mean: float = 0.0, std: float = 1.0, dtype=torch.float32):
    z = torch.randn(shape, generator=g, device=g.device, dtype=dtype).mul_(std)
    return (z.add_(mean) if mean else z).to(device)


def randint(shape, g: torch.Generator, device, low: int, high: int):
    """Integers in [low, high) (NumPy's randint convention)."""
    return torch.randint(low, high, shape, generator=g, device=g.device).to(device)


# ---------------------------------------------------------------------------------------------
# quantisation


def quantize_uint8(x: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """[0, 1] floats -> uint8 by truncation, as the released files were made (`np.uint8(x * 255)`).

    A tolerance of 1e-4 of a grey level keeps exact levels (k / 255 held as k - 1e-7) at k.
    `in_place` reuses x's memory for the float steps (x is overwritten): a fresh 12 MB tensor per
    1,000 CIFAR images costs more in page faults than the arithmetic.
    """
    y = x.mul_(255) if in_place else x * 255
    # the casts truncate, which is the floor of these non-negative values; float -> int16 -> uint8
    # gives the same integers as float -> uint8 and is 3x faster on the CPU (vectorised casts)
    return y.add_(1e-4).clamp_(0, 255).to(torch.int16).to(torch.uint8)


def truncate_levels(x: torch.Tensor) -> torch.Tensor:
    """Snap to the uint8 grid by truncation but stay float (an intermediate `np.uint8` step)."""
    return x.clamp(0, 1).mul_(255).add_(1e-4).floor_().div_(255)


def round_levels(x: torch.Tensor) -> torch.Tensor:
    """Snap to the uint8 grid rounding halves up (what 8-bit PIL and ImageMagick output do)."""
    return x.clamp(0, 1).mul_(255).add_(0.5).floor_().div_(255)


# ---------------------------------------------------------------------------------------------
# separable linear filters as dense operators


@lru_cache(maxsize=256)
def _gaussian_operator(n: int, sigma: float, mode: str, truncate: float) -> np.ndarray:
    if sigma <= 0:
        return np.eye(n)
    from scipy import ndimage  # here, not at import (start-up time of every command)

    return ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode=mode, truncate=truncate)


def operator(matrix: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(matrix, dtype=like.dtype, device=like.device)


def gaussian_blur(
    x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """SciPy's `gaussian_filter` over H and W (skimage's `gaussian` with its defaults) on a batch."""
    if sigma <= 0:
        return x.clone()  # always a new tensor: callers may work on the result in place
    h, w = x.shape[-2:]
    ah = operator(_gaussian_operator(h, float(sigma), mode, truncate), x)
    aw = ah if w == h else operator(_gaussian_operator(w, float(sigma), mode, truncate), x)
    return ah @ x @ aw.T


def conv2d_same(x: torch.Tensor, kernel: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
    """2-D correlation with one kernel for every channel, output the size of the input.

    `reflect` here is OpenCV's BORDER_REFLECT_101 (the default of cv2.filter2D).
    """
    kh, kw = kernel.shape
    c = x.shape[1]
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=pad_mode)
    weight = kernel.to(x).expand(c, 1, kh, kw)
    return F.conv2d(padded, weight, groups=c)


# ---------------------------------------------------------------------------------------------
# motion blur (ImageMagick's one-sided Gaussian line kernel, edge pixels repeated)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """Blur each image along its own angle with ImageMagick's MotionBlurImage kernel.

    The kernel has width 2*radius+1 taps at distances i = 0..2r along the direction, weights
    exp(-i^2 / 2 sigma^2) normalised to sum 1; tap i reads the pixel (round(i cos a), round(i sin a))
    away, repeating edge pixels beyond the border. On one CPU thread the images are sorted by
    angle and each tap adds shifted slices of runs of images that share its rounded offset;
    otherwise one gather per tap.
    """
    n, c, h, w = x.shape
    width = 2 * int(round(radius)) + 1
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    keep = weights > weights.sum() * 1e-4  # dropped taps move no pixel by 1/100 of a grey level
    taps, weights = taps[keep], weights[keep] / weights[keep].sum()
    a = torch.deg2rad(angles_deg.to(torch.float64).cpu())
    # ImageMagick rounds with ceil(v - 0.5)
    dx = torch.ceil(taps[None, :] * torch.cos(a)[:, None] - 0.5).long()  # (N, taps)
    dy = torch.ceil(taps[None, :] * torch.sin(a)[:, None] - 0.5).long()
    pad = int(max(dx.abs().max(), dy.abs().max())) if n else 0
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate") if pad else x
    # Sorted by angle, each tap's offset is constant over runs of images (about 2 i runs for tap i).
    # On one CPU thread one slice op per run beats one gather per tap while runs cover thousands
    # of values (measured 3-4x faster for the snow streaks); with several threads on a busy
    # machine every small op waits for all of them, and the few large gathers win.
    order = torch.argsort(a, stable=True)
    sdx, sdy = dx[order], dy[order]
    changes = (sdx[1:] != sdx[:-1]) | (sdy[1:] != sdy[:-1])  # (N - 1, taps)
    runs = int(changes.sum()) + len(taps)
    single = x.device.type == "cpu" and torch.get_num_threads() == 1
    if single and runs * 1000 < n * c * h * w * len(taps):
        return _motion_blur_by_runs(xp, pad, (h, w), weights.tolist(), order, sdx, sdy, changes)
    wp = w + 2 * pad
    flat = xp.reshape(n, c, -1)
    rows = torch.arange(h, device=x.device)[:, None] + pad
    cols = torch.arange(w, device=x.device)[None, :] + pad
    base = (rows * wp + cols).flatten()[None, :]  # (1, H*W)
    offsets = (dy * wp + dx).to(x.device)  # (N, taps)
    out = torch.zeros(n, c, h * w, dtype=x.dtype, device=x.device)
    for t in range(len(taps)):
        idx = (base + offsets[:, t : t + 1])[:, None, :].expand(n, c, h * w)
        out.add_(flat.gather(2, idx), alpha=float(weights[t]))
    return out.view(n, c, h, w)


def _motion_blur_by_runs(xp, pad, size, weights, order, dx, dy, changes) -> torch.Tensor:
    """Motion blur of padded images sorted by angle: per tap, one shifted slice per run of images
    sharing that tap's offset, a cache-sized block of images at a time; then the callers' order."""
    h, w = size
    n, c = xp.shape[:2]
    block = max(1, (1 << 18) // (c * h * w))  # about 1 MB of float32 output per block
    cuts = [[0, *(torch.nonzero(changes[:, t]).flatten() + 1).tolist(), n] for t in range(len(weights))]
    dy, dx = dy.tolist(), dx.tolist()
    xs = xp.index_select(0, order.to(xp.device))
    out = torch.empty(n, c, h, w, dtype=xp.dtype, device=xp.device)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        for t, weight in enumerate(weights):
            bounds = [b0, *(i for i in cuts[t] if b0 < i < b1), b1]
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                oy, ox = pad + dy[lo][t], pad + dx[lo][t]
                shifted = xs[lo:hi, :, oy : oy + h, ox : ox + w]
                if t == 0:
                    torch.mul(shifted, weight, out=out[lo:hi])
                else:
                    out[lo:hi].add_(shifted, alpha=weight)
    result = torch.empty_like(out)
    result[order.to(xp.device)] = out
    return result


def shifted_sum(x: torch.Tensor, kernel: np.ndarray, pad_mode: str = "reflect") -> torch.Tensor:
    """2-D correlation with a small kernel as a sum of shifted copies (faster than depthwise conv on CPU)."""
    kh, kw = kernel.shape
    h, w = x.shape[-2:]
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=pad_mode)
    out = torch.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0:
                out.add_(xp[..., i : i + h, j : j + w], alpha=float(kernel[i, j]))
    return out


# ---------------------------------------------------------------------------------------------
# geometry


@lru_cache(maxsize=64)
def _zoom_operator(n: int, factor: float) -> np.ndarray:
    """(n x n) matrix of a 1-D clipped zoom: centre crop of ceil(n / factor), linear zoom, centre trim."""
    ch = int(math.ceil(n / factor))
    top = (n - ch) // 2
    out_len = int(round(ch * factor))
    trim = (out_len - n) // 2
    mat = np.zeros((n, n))
    for i in range(n):
        # scipy.ndimage.zoom (grid_mode=False) maps the corner pixel centres onto each other
        pos = (i + trim) * (ch - 1) / (out_len - 1) if out_len > 1 else 0.0
        lo = min(int(np.floor(pos)), ch - 1)
        frac = pos - lo
        mat[i, top + lo] += 1 - frac
        if frac > 0:
            mat[i, top + lo + 1] += frac
    return mat


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by `factor` keeping the size (SciPy `zoom(order=1)` on the centre crop).

    Bilinear zoom is separable: one small matrix per axis.
    """
    h, w = x.shape[-2:]
    ah = operator(_zoom_operator(h, float(factor)), x)
    aw = ah if w == h else operator(_zoom_operator(w, float(factor)), x)
    return ah @ x @ aw.T


@lru_cache(maxsize=16)
def _zoom_blur_operator(h: int, w: int, factors: tuple[float, ...]) -> np.ndarray:
    """(HW x HW) matrix of the mean of the image and its clipped zooms (for small images)."""
    total = np.eye(h * w)
    for z in factors:
        total += np.kron(_zoom_operator(h, z), _zoom_operator(w, z))
    return total / (len(factors) + 1)


def zoom_mean(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """Mean of x and its clipped zooms by `factors`: one matrix product for images up to 64x64."""
    n, c, h, w = x.shape
    if h * w <= 64 * 64:
        op = operator(_zoom_blur_operator(h, w, tuple(float(z) for z in factors)), x)
        return (x.reshape(n * c, h * w) @ op.T).view(n, c, h, w)
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, float(z))
    return out / (len(factors) + 1)


def sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, border: str) -> torch.Tensor:
    """Bilinear sampling at pixel coordinates rows, cols (N, H, W).

    border: "reflect101" (OpenCV BORDER_REFLECT_101), "reflect" (SciPy half-sample 'reflect'),
    or "zeros" (constant 0).
    """
    h, w = x.shape[-2:]
    grid = torch.empty(*rows.shape, 2, dtype=torch.promote_types(rows.dtype, cols.dtype), device=x.device)
    # normalised coordinates written in place into the grid's two planes
    for coords, size, plane in ((cols, w, grid[..., 0]), (rows, h, grid[..., 1])):
        torch.mul(coords, 2, out=plane)
        if border == "reflect101":  # 2 c / (size - 1) - 1
            plane.div_(size - 1).sub_(1)
        else:  # (2 c + 1) / size - 1
            plane.add_(1).div_(size).sub_(1)
    grid = grid.to(x.dtype)
    if border == "reflect101":
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    pad = "reflection" if border == "reflect" else "zeros"
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=pad, align_corners=False)


def affine_sample(x: torch.Tensor, inv: torch.Tensor, border: str) -> torch.Tensor:
    """out(col, row) = x(inv @ [col, row, 1]) for a batch of 2x3 inverse maps inv (N, 2, 3)."""
    n, _, h, w = x.shape
    rows, cols = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=inv.dtype),
        torch.arange(w, device=x.device, dtype=inv.dtype),
        indexing="ij",
    )
    pts = torch.stack([cols.flatten(), rows.flatten(), torch.ones(h * w, device=x.device, dtype=inv.dtype)])
    src = inv.to(x.device) @ pts  # (N, 2, HW)
    return sample(x, src[:, 1].reshape(n, h, w), src[:, 0].reshape(n, h, w), border)


# ---------------------------------------------------------------------------------------------
# diamond-square plasma fractal (fog, frost), batched


def plasma_fractal(n: int, mapsize: int, decay: float, g: torch.Generator, device) -> torch.Tensor:
    """(n, mapsize, mapsize) heightmaps in [0, 1] by the diamond-square algorithm.

    Each level sets square centres and diamond points to the mean of their four neighbours
    (wrapping around) plus uniform noise of amplitude `wibble`, which shrinks by `decay` per level.
    """
    if mapsize & (mapsize - 1):
        raise ValueError("mapsize must be a power of two")
    m = torch.zeros(n, mapsize, mapsize, device=device)
    step, wibble = mapsize, 100.0

    def wibbled(a):
        noise = torch.rand(a.shape, generator=g, device=g.device).to(device)
        return a.mul_(0.25).add_(noise.mul_(2 * wibble * wibble).sub_(wibble * wibble))

    while step >= 2:
        half = step // 2
        corners = m[:, 0:mapsize:step, 0:mapsize:step]
        acc = corners + torch.roll(corners, -1, dims=1)
        acc = acc + torch.roll(acc, -1, dims=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled(acc)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    m -= m.flatten(1).amin(1)[:, None, None]
    return m / m.flatten(1).amax(1)[:, None, None]


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))


# ---------------------------------------------------------------------------------------------
# colour


def to_gray(x: torch.Tensor, weights=(0.299, 0.587, 0.114)) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma (OpenCV RGB2GRAY weights by default)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (r * weights[0]).add_(g * weights[1]).add_(b * weights[2])


SKIMAGE_GRAY = (0.2125, 0.7154, 0.0721)


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel maximum over the channels, (N, 1, H, W): elementwise, faster than amax(1) on CPU."""
    out = x[:, :1].clone()
    for c in range(1, x.shape[1]):
        torch.maximum(out, x[:, c : c + 1], out=out)
    return out


def channel_min(x: torch.Tensor) -> torch.Tensor:
    out = x[:, :1].clone()
    for c in range(1, x.shape[1]):
        torch.minimum(out, x[:, c : c + 1], out=out)
    return out


def shift_value(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Add `delta` to the HSV value (max channel), keeping hue and saturation.

    For a fixed hue and saturation RGB is proportional to V, so the HSV round trip is a rescaling
    by V'/V; black pixels (V = 0, S = 0) become grey V'.
    """
    v = channel_max(x)
    v_new = (v + delta).clamp(0, 1)
    scale = v_new / v.clamp_min(1e-12)  # finite, and unused where v = 0
    return torch.where(v > 0, x * scale, v_new)


def scale_saturation(x: torch.Tensor, factor: float, shift: float) -> torch.Tensor:
    """Set HSV saturation S to clip(S * factor + shift, 0, 1), keeping hue and value.

    Channel c = V - S * V * k_c for a hue-dependent k_c, so a new S' moves every channel towards or
    away from V by S'/S. Grey pixels (S = 0) have hue 0 (red) in the HSV convention: they become
    (V, V(1-S'), V(1-S')).
    """
    v, mn = channel_max(x), channel_min(x)
    s = (v - mn) / v.clamp_min(1e-12)  # 0 where v = 0 (then mn = 0 too)
    s_new = (s * factor + shift).clamp_(0, 1)
    # grey pixels (s = 0) have v - x = 0, so their finite ratio leaves them at (V, V, V)
    ratio = s_new / s.clamp_min(1e-12)
    out = v - ratio * (v - x)
    if shift > 0:  # grey pixels gain saturation with hue 0
        out[:, 1:] = torch.where(s > 0, out[:, 1:], v * (1 - s_new))
    return out


# ---------------------------------------------------------------------------------------------
# PIL BOX resampling as matrices (pixelate)


@lru_cache(maxsize=64)
def box_resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's BOX filter coefficients (n_out x n_in), as in its `precompute_coeffs`."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    mat = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - center + 0.5) / filterscale
            mat[i, j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = mat[i].sum()
        if total:
            mat[i] /= total
    return mat


@lru_cache(maxsize=64)
def box_round_trip_matrix(n: int, n_small: int) -> np.ndarray:
    """(n x n): PIL BOX down to n_small, then BOX back up to n (each enlarged pixel copies one)."""
    return box_resample_matrix(n_small, n) @ box_resample_matrix(n, n_small)


def box_pixelate_levels(x: torch.Tensor, small_h: int, small_w: int) -> torch.Tensor:
    """PIL `resize(BOX)` to (small_h, small_w) and back, on 8-bit images held as levels 0..255.

    PIL's 8-bit resampler runs a horizontal pass, rounds half up, a vertical pass, rounds again,
    for each resize. Enlarging with BOX copies pixels, which commutes with the rounding and with
    the other axis, so the four passes fold into one matrix product per axis (down, then the
    copies), each followed by PIL's rounding. Outputs average at most two levels (scale >= 1/2)
    with weights 1/2, exact in float, so the .5 ties round exactly as PIL's fixed point does.
    """
    h, w = x.shape[-2:]
    mw = operator(box_round_trip_matrix(w, small_w), x)
    mh = mw if (h, small_h) == (w, small_w) else operator(box_round_trip_matrix(h, small_h), x)
    y = (x @ mw.T).add_(0.5).floor_()
    return (mh @ y).add_(0.5).floor_()
