"""A straightforward per-image NumPy/SciPy/PIL implementation of the CIFAR-10-C corruptions.

Written from the published description of the reference generator (Hendrycks and Dietterich,
make_cifar_c.py) in its style: one uint8 (H, W, C) image at a time, Python loops where the
reference loops, SciPy filters, PIL for resampling and JPEG, matplotlib's HSV conversion. No
ImageMagick or OpenCV: their two operations (motion blur, Canny-free spatter) are written out.
It is the yardstick of benchmarks/bench_corruptions*.py, not part of the package.

Every function takes (image uint8 HWC, severity, rng: numpy Generator) and returns floats in
[0, 255]; `apply` truncates to uint8 as the reference does.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

# ---------------------------------------------------------------------------------------------- helpers


def _gauss(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    if sigma <= 0:
        return x
    sig = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


def _clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    zooms = (z, z, 1) if img.ndim == 3 else (z, z)
    out = ndimage.zoom(img[top : top + ch, top : top + ch], zooms, order=1)
    t = (out.shape[0] - h) // 2
    return out[t : t + h, t : t + h]


def _motion_blur(img: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """One-sided Gaussian line blur (ImageMagick MotionBlurImage), edge pixels repeated, 8-bit out."""
    width = 2 * radius + 1
    w = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    w /= w.sum()
    a = np.deg2rad(angle)
    h, wd = img.shape[:2]
    out = np.zeros(img.shape, dtype=np.float64)
    rows, cols = np.arange(h), np.arange(wd)
    for i in range(width):
        dx = int(np.ceil(i * np.cos(a) - 0.5))
        dy = int(np.ceil(i * np.sin(a) - 0.5))
        r = np.clip(rows + dy, 0, h - 1)
        c = np.clip(cols + dx, 0, wd - 1)
        out += w[i] * img[r][:, c]
    return np.round(np.clip(out, 0, 255))


def _plasma(mapsize: int, decay: float, rng) -> np.ndarray:
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wib(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[0:mapsize:step, 0:mapsize:step]
        acc = corners + np.roll(corners, -1, axis=0)
        acc += np.roll(acc, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wib(acc)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, half:mapsize:step] = wib(dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
        m[half:mapsize:step, 0:mapsize:step] = wib(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


# ---------------------------------------------------------------------------------------------- corruptions


def gaussian_noise(x, s, rng):
    c = [0.04, 0.06, 0.08, 0.09, 0.10][s - 1]
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, s, rng):
    c = [500, 250, 100, 75, 50][s - 1]
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, s, rng):
    c = [0.01, 0.02, 0.03, 0.05, 0.07][s - 1]
    x = x / 255.0
    flip = rng.random(x.shape) <= c
    salt = rng.random(x.shape) <= 0.5
    x = np.where(flip & salt, 1.0, np.where(flip & ~salt, 0.0, x))
    return x * 255


def speckle_noise(x, s, rng):
    c = [0.06, 0.1, 0.12, 0.16, 0.2][s - 1]
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, s, rng):
    c = [0.4, 0.6, 0.7, 0.8, 1][s - 1]
    return np.clip(_gauss(x / 255.0, c), 0, 1) * 255


def glass_blur(x, s, rng):
    sigma, d, iters = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s - 1]
    x = np.uint8(_gauss(x / 255.0, sigma) * 255)
    size = x.shape[0]
    for _ in range(iters):
        for h in range(size - d, d, -1):
            for w in range(size - d, d, -1):
                dx, dy = rng.randint(-d, d, size=2)
                x[h, w] = x[h + dy, w + dx]  # the reference's "swap" copies one way
    return np.clip(_gauss(x / 255.0, sigma), 0, 1) * 255


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    coords = np.arange(-8, 9)
    xx, yy = np.meshgrid(coords, coords)
    k = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    k /= k.sum()
    t = np.array([-1.0, 0.0, 1.0])
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    return ndimage.correlate(k, np.outer(g, g), mode="mirror")


def defocus_blur(x, s, rng):
    r, a = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    k = _disk(r, a)
    x = x / 255.0
    out = np.stack([ndimage.correlate(x[..., ch], k, mode="mirror") for ch in range(x.shape[-1])], -1)
    return np.clip(out, 0, 1) * 255


def motion_blur(x, s, rng):
    r, sg = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s - 1]
    return _motion_blur(x.astype(np.float64), r, sg, rng.uniform(-45, 45))


def zoom_blur(x, s, rng):
    end = [1.06, 1.11, 1.16, 1.21, 1.26][s - 1]
    zs = np.arange(1, end, 0.01)
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in zs:
        out += _clipped_zoom(x, z)
    return np.clip((x + out) / (len(zs) + 1), 0, 1) * 255


def snow(x, s, rng):
    c = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ][s - 1]
    x = x.astype(np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer, c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    layer = _motion_blur(layer, c[4], c[5], rng.uniform(-135, -45)) / 255.0
    layer = layer[..., None]
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x, s, rng, texture=None):
    """The reference blends crops of frost photos; `texture` is a (H, W, 3) uint8 crop to blend."""
    a, b = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][s - 1]
    return np.clip(a * x.astype(np.float64) + b * texture, 0, 255)


def fog(x, s, rng):
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s - 1]
    x = x / 255.0
    mx = x.max()
    h = x.shape[0]
    x = (
        x
        + strength * _plasma(32 if h <= 32 else 1 << int(np.ceil(np.log2(h))), decay, rng)[:h, :h][..., None]
    )
    return np.clip(x * mx / (mx + strength), 0, 1) * 255


def brightness(x, s, rng):
    c = [0.05, 0.1, 0.15, 0.2, 0.3][s - 1]
    hsv = rgb_to_hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1) * 255


def contrast(x, s, rng):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][s - 1]
    x = x / 255.0
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1) * 255


def saturate(x, s, rng):
    a, b = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][s - 1]
    hsv = rgb_to_hsv(x / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return np.clip(hsv_to_rgb(hsv), 0, 1) * 255


def elastic_transform(x, s, rng):
    size = x.shape[0]
    alpha, sigma, aff = [
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ][s - 1]
    alpha, sigma, aff = alpha * size, sigma * size, aff * size
    img = x.astype(np.float32) / 255.0
    c, sq = size // 2, size // 3
    p1 = np.array([[c + sq, c + sq], [c + sq, c - sq], [c - sq, c - sq]], dtype=np.float64)  # (x, y)
    p2 = p1 + rng.uniform(-aff, aff, size=p1.shape)
    m = np.linalg.solve(np.c_[p1, np.ones(3)], p2).T  # M @ [x, y, 1] = [x', y']
    inv = np.linalg.inv(m[:, :2])
    t = -inv @ m[:, 2]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + t[0]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + t[1]
    img = np.stack(
        [ndimage.map_coordinates(img[..., k], [sy, sx], order=1, mode="mirror") for k in range(3)], -1
    )
    dx = _gauss(rng.uniform(-1, 1, size=(size, size)), sigma, "reflect", 3) * alpha
    dy = _gauss(rng.uniform(-1, 1, size=(size, size)), sigma, "reflect", 3) * alpha
    out = np.stack(
        [ndimage.map_coordinates(img[..., k], [yy + dy, xx + dx], order=1, mode="reflect") for k in range(3)],
        -1,
    )
    return np.clip(out, 0, 1) * 255


def pixelate(x, s, rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    size = x.shape[0]
    img = Image.fromarray(x)
    img = img.resize((int(size * c), int(size * c)), Image.BOX).resize((size, size), Image.BOX)
    return np.asarray(img).astype(np.float64)


def jpeg_compression(x, s, rng):
    q = [80, 65, 58, 50, 40][s - 1]
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf)).astype(np.float64)


def spatter(x, s, rng):
    loc, scale, sigma, thr, inten, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ][s - 1]
    x = x.astype(np.float32) / 255.0
    liquid = _gauss(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < thr] = 0
    if not mud:
        wet = liquid > 0
        rim = ndimage.binary_dilation(wet, np.ones((3, 3))) != ndimage.binary_erosion(
            wet, np.ones((3, 3)), border_value=1
        )
        dist = (
            ndimage.distance_transform_cdt(~rim, metric="chessboard") if rim.any() else np.full(rim.shape, 20)
        )
        dist = np.minimum(dist, 20).astype(np.float64)
        dist = np.floor(ndimage.uniform_filter(dist, 3, mode="mirror") + 1e-6).clip(0, 255)
        hist = np.bincount(dist.astype(int).ravel(), minlength=256)
        cdf = hist.cumsum()
        cmin = cdf[hist > 0].min()
        lut = np.round(np.clip(cdf - cmin, 0, None) * 255 / max(dist.size - cmin, 1))
        dist = lut[dist.astype(int)]
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
        dist = np.clip(np.round(ndimage.correlate(dist, ker, mode="mirror")), 0, 255)
        dist = ndimage.uniform_filter(dist, 3, mode="mirror")
        m = np.clip(liquid, 0, 1) * dist
        m = m / max(m.max(), 1e-12) * inten
        colour = np.array([175, 238, 238]) / 255.0
        return np.clip(x + m[..., None] * colour, 0, 1) * 255
    m = _gauss((liquid > thr).astype(np.float32), inten)
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0
    return np.clip(x * (1 - m[..., None]) + colour * m[..., None], 0, 1) * 255


CORRUPTIONS = {
    f.__name__: f
    for f in (
        gaussian_noise,
        shot_noise,
        impulse_noise,
        defocus_blur,
        glass_blur,
        motion_blur,
        zoom_blur,
        snow,
        frost,
        fog,
        brightness,
        contrast,
        elastic_transform,
        pixelate,
        jpeg_compression,
        speckle_noise,
        gaussian_blur,
        spatter,
        saturate,
    )
}


def apply(name: str, images: np.ndarray, severity: int, seed: int = 0, textures: np.ndarray | None = None):
    """Corrupt uint8 images (N, H, W, C) one at a time; uint8 out, truncated like the reference."""
    rng = np.random.RandomState(seed)  # the legacy generator the reference used
    fn = CORRUPTIONS[name]
    out = np.empty_like(images)
    for i, img in enumerate(images):
        res = fn(img, severity, rng, texture=textures[i]) if name == "frost" else fn(img, severity, rng)
        out[i] = np.uint8(np.clip(res, 0, 255))
    return out
