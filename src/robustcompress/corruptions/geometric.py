"""The MNIST-C additions (Mu and Gilmer 2019): affine moves, stripes, drawn lines and Canny edges."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from robustcompress.corruptions import _ops


def _random_sign(n: int, g: torch.Generator) -> torch.Tensor:
    return _ops.randint((n,), g, "cpu", 0, 2).double() * 2 - 1


def _warp_about_centre(x: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
    """out(p) = x(lin @ (p - c) + c) with c the image centre, zeros outside (skimage `warp`)."""
    h, w = x.shape[-2:]
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    shift = centre[None, :, None] - lin @ centre[None, :, None]
    inv = torch.cat([lin, shift], dim=2).to(x.dtype)
    return _ops.affine_sample(x, inv, "zeros").clamp_(0, 1)


def shear(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Shear by `angle` radians to the left or right at random, about the centre."""
    a = _random_sign(x.shape[0], g) * p["angle"]
    lin = torch.zeros(x.shape[0], 2, 2, dtype=torch.float64)
    lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 1] = 1, -torch.sin(a), torch.cos(a)
    return _warp_about_centre(x, lin)


def rotate(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Rotate by `angle` radians, clockwise or anticlockwise at random, about the centre."""
    a = _random_sign(x.shape[0], g) * p["angle"]
    lin = torch.stack([torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)], dim=1).view(-1, 2, 2)
    return _warp_about_centre(x, lin)


def scale(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Shrink the content by `factor` about the centre (the border fills with black)."""
    lin = torch.eye(2, dtype=torch.float64).expand(x.shape[0], 2, 2) / p["factor"]
    return _warp_about_centre(x, lin.clone())


def translate(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Shift by `pixels` along each axis, each direction chosen at random."""
    n = x.shape[0]
    d = torch.stack([_random_sign(n, g), _random_sign(n, g)], dim=1) * p["pixels"]
    inv = torch.cat([torch.eye(2, dtype=torch.float64).expand(n, 2, 2), d[:, :, None]], dim=2)
    return _ops.affine_sample(x, inv.to(x.dtype), "zeros").clamp_(0, 1)


def stripe(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Invert the outer quarter columns on both sides (columns < W/4 and >= 3W/4)."""
    w = x.shape[-1]
    out = x.clone()
    q = w // 4
    out[..., :q] = 1 - out[..., :q]
    out[..., w - q :] = 1 - out[..., w - q :]
    return out


def _lines(h: int, w: int, seg: torch.Tensor, device) -> torch.Tensor:
    """Soft anti-aliased line strokes: seg (N, S, 4) of (c0, r0, c1, r1) -> (N, H, W) summed strokes.

    Each stroke is 1 + log(1 - d / 2.3) of the vertical distance d to the line through the two
    points, kept between columns floor(c0) and ceil(c1); a vertical segment draws nothing.
    """
    c0, r0, c1, r1 = (seg[..., i, None, None].to(device) for i in range(4))
    cols = torch.arange(w, device=device, dtype=seg.dtype).view(1, 1, 1, w)
    rows = torch.arange(h, device=device, dtype=seg.dtype).view(1, 1, h, 1)
    valid = c1 != c0
    slope = torch.where(
        valid, (r1 - r0) / torch.where(valid, c1 - c0, torch.ones_like(c0)), torch.zeros_like(c0)
    )
    dist = (rows - (slope * (cols - c0) + r0)).abs().clamp(0, 2.3 - 1e-10)
    stroke = (torch.log(1 - dist / 2.3) + 1).clamp(0, 1)
    inside = (cols >= torch.floor(c0)) & (cols < torch.ceil(c1)) & valid
    return (stroke * inside).sum(1)


def dotted_line(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """A dashed line (2-px dashes) across the image between two random heights."""
    n, _, h, w = x.shape
    r = _ops.randint((n, 2), g, "cpu", 0, h - 1).double()
    seg = torch.stack([torch.zeros(n), r[:, 0], torch.full((n,), w - 1.0), r[:, 1]], 1).double()[:, None]
    stroke = _lines(h, w, seg, x.device)
    dashes = ((torch.arange(w, device=x.device) // 2) % 2 == 1).to(stroke.dtype)
    return (x + (stroke * dashes).to(x.dtype)[:, None]).clamp_(0, 1)


def _zigzag_points(r0: float, r1: float, c0: float, c1: float, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    theta = math.atan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / math.cos(theta)
    pts = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        pts.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        pts.append((d, r_i / (2 * (d - max_c))))
    pts = np.array(pts).T
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cs, rs = rot @ pts
    return np.stack([cs + c0, rs + r0], 1)


def zigzag(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """A zigzag stroke (2 px legs) from column 2 to W-3 at a random height and slope."""
    n, _, h, w = x.shape
    r0 = _ops.randint((n,), g, "cpu", 0, h - 1)
    r1 = r0 + _ops.randint((n,), g, "cpu", -5, 5)
    polylines = [_zigzag_points(float(a), float(b), 2.0, w - 3.0) for a, b in zip(r0, r1)]
    s = max(len(pl) for pl in polylines) - 1
    seg = torch.zeros(n, s, 4, dtype=torch.float64)
    for i, pl in enumerate(polylines):
        k = len(pl) - 1
        seg[i, :k] = torch.from_numpy(np.concatenate([pl[:-1], pl[1:]], 1))
    return (x + _lines(h, w, seg, x.device).to(x.dtype)[:, None]).clamp_(0, 1)


def canny_edges(x: torch.Tensor, p: dict, g: torch.Generator) -> torch.Tensor:
    """Replace the image by its Canny edges (white on black).

    Gaussian smoothing of `sigma` (border-normalised), Sobel gradients, non-maximum suppression in
    four directions, hysteresis between `low` and `high` with 8-connected growth; the outer pixel
    ring is never an edge.
    """
    grey = _ops.to_gray(x, _ops.SKIMAGE_GRAY).double()
    ones = torch.ones_like(grey)
    smooth = _ops.gaussian_blur(grey, p["sigma"], mode="constant") / _ops.gaussian_blur(
        ones, p["sigma"], mode="constant"
    )
    sob = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=torch.float64)
    gx = _ops.conv2d_same(smooth, sob, "replicate")
    gy = _ops.conv2d_same(smooth, sob.T, "replicate")
    mag = torch.hypot(gx, gy)
    angle = torch.remainder(torch.rad2deg(torch.atan2(gy, gx)), 180.0)
    sector = torch.round(angle / 45).long() % 4  # 0: horizontal gradient, 1: 45, 2: vertical, 3: 135
    padded = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[-2:]

    def at(dr, dc):
        return padded[..., 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    pairs = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for k, (a, b) in enumerate(pairs):
        keep |= (sector == k) & (mag >= at(*a)) & (mag >= at(*b))
    nms = torch.where(keep, mag, torch.zeros_like(mag))
    nms[..., 0, :] = nms[..., -1, :] = 0
    nms[..., :, 0] = nms[..., :, -1] = 0
    weak = nms >= p["low"]
    edges = (nms >= p["high"]).double()
    for _ in range(h * w):
        grown = (F.max_pool2d(edges, 3, 1, 1) > 0) & weak
        if torch.equal(grown.double(), edges):
            break
        edges = grown.double()
    return edges.to(x.dtype).expand_as(x).clone()
