"""Baseline JPEG's lossy path (what libjpeg does at a given quality), batched in torch.

A JPEG round trip loses information only in colour conversion, chroma subsampling, the DCT and
quantisation; entropy coding is lossless. This module runs those steps for a whole batch with the
integer arithmetic of libjpeg(-turbo)'s defaults, the codec behind Pillow:

- RGB -> YCbCr in 16-bit fixed point (jccolor.c), grayscale images are one luminance plane;
- 4:2:0 chroma by 2x2 averaging with the alternating 1, 2 rounding bias (jcsample.c);
- the "islow" integer forward DCT (jfdctint.c), quantisation with the IJG tables scaled by quality
  (jcparam.c) and rounded division (jcdctmgr.c);
- dequantisation and the "islow" integer inverse DCT (jidctint.c);
- "fancy" triangular chroma upsampling (jdsample.c) and YCbCr -> RGB (jdcolor.c).

Edges are padded by repeating the last row and column as libjpeg does. Colour steps are int32;
each 1-D DCT pass is one float64 matrix product over all blocks, exact because every value is an
integer far below 2^53, followed by libjpeg's rounding shift. On the CIFAR-10 images and on noise
the result equals Pillow's decode(encode(x)) pixel for pixel (tests/test_corruptions_jpeg.py,
benchmarks/bench_corruptions_jpeg.py).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

# IJG standard tables (ITU T.81 Annex K), row-major
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def quant_table(quality: int, chroma: bool) -> list[int]:
    """The IJG table scaled by quality (jpeg_quality_scaling), clamped to 1..255 (baseline)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = CHROMA_TABLE if chroma else LUMA_TABLE
    return [min(max((q * scale + 50) // 100, 1), 255) for q in base]


@lru_cache(maxsize=64)
def _table(quality: int, chroma: bool, device: str) -> torch.Tensor:
    return torch.tensor(quant_table(quality, chroma), dtype=torch.float64, device=device).view(8, 8)


# ------------------------------------------------------------------------------------------ fixed point


def _fix(x: float, bits: int) -> int:
    return int(x * (1 << bits) + 0.5)


CONST_BITS, PASS1_BITS = 13, 2
# libjpeg's FIX(c) constants of the islow DCT: round(c * 2^13)
F_0_298, F_0_390, F_0_541, F_0_765 = 2446, 3196, 4433, 6270
F_0_899, F_1_175, F_1_501, F_1_847 = 7373, 9633, 12299, 15137
F_1_961, F_2_053, F_2_562, F_3_072 = 16069, 16819, 20995, 25172


def _fdct_lines(d: list) -> list:
    """jfdctint.c's 1-D pass over eight samples d[0..7], before its final rounding shift.

    Outputs 0 and 4 are exact sums in libjpeg; scaling them by 2^CONST_BITS lets one rounding
    shift (DESCALE) serve all eight outputs of either pass.
    """
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    z1 = (tmp12 + tmp13) * F_0_541
    z5 = (tmp4 + tmp6 + tmp5 + tmp7) * F_1_175
    za, zb = (tmp4 + tmp7) * -F_0_899, (tmp5 + tmp6) * -F_2_562
    zc, zd = (tmp4 + tmp6) * -F_1_961 + z5, (tmp5 + tmp7) * -F_0_390 + z5
    return [
        (tmp10 + tmp11) * (1 << CONST_BITS),
        tmp7 * F_1_501 + za + zd,
        z1 + tmp13 * F_0_765,
        tmp6 * F_3_072 + zb + zc,
        (tmp10 - tmp11) * (1 << CONST_BITS),
        tmp5 * F_2_053 + zb + zd,
        z1 - tmp12 * F_1_847,
        tmp4 * F_0_298 + za + zc,
    ]


def _idct_lines(d: list) -> list:
    """jidctint.c's 1-D pass over eight dequantised coefficients d[0..7], before its rounding shift."""
    z1 = (d[2] + d[6]) * F_0_541
    tmp2, tmp3 = z1 - d[6] * F_1_847, z1 + d[2] * F_0_765
    tmp0, tmp1 = (d[0] + d[4]) * (1 << CONST_BITS), (d[0] - d[4]) * (1 << CONST_BITS)
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    t0, t1, t2, t3 = d[7], d[5], d[3], d[1]
    z5 = (t0 + t2 + t1 + t3) * F_1_175
    za, zb = (t0 + t3) * -F_0_899, (t1 + t2) * -F_2_562
    zc, zd = (t0 + t2) * -F_1_961 + z5, (t1 + t3) * -F_0_390 + z5
    t0, t1 = t0 * F_0_298 + za + zc, t1 * F_2_053 + zb + zd
    t2, t3 = t2 * F_3_072 + zb + zc, t3 * F_1_501 + za + zd
    return [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]


@lru_cache(maxsize=16)
def _matrix(kind: str, shift: int, device: str) -> torch.Tensor:
    """M^T / 2^shift for a 1-D pass (lines before rounding = d @ M^T), float64 for exact products."""
    eye = [torch.eye(8, dtype=torch.int64)[i] for i in range(8)]
    lines = (_fdct_lines if kind == "fdct" else _idct_lines)(eye)  # lines[j][i] = M[j, i]
    return (torch.stack(lines, 0).T.to(torch.float64) * 2.0**-shift).to(device).contiguous()


def _pass(x: torch.Tensor, kind: str, shift: int, transpose: bool) -> torch.Tensor:
    """One rounded 1-D pass along the last axis of (B, 8, 8) float64 integers.

    Every intermediate is an integer below 2^40 (times a power of two), so float64 products are
    exact and floor(x M^T / 2^shift + 1/2) is libjpeg's DESCALE bit for bit.
    """
    m = _matrix(kind, shift, str(x.device))
    y = torch.addmm(_half(x.device), x.reshape(-1, 8), m).floor_().view(-1, 8, 8)
    return y.transpose(1, 2).contiguous() if transpose else y


@lru_cache(maxsize=4)
def _half(device) -> torch.Tensor:
    return torch.full((1, 8), 0.5, dtype=torch.float64, device=device)


def lossy_blocks(blocks: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Samples (B, 8, 8) 0..255 (float64) -> forward DCT, quantise, dequantise, inverse DCT -> 0..255.

    Each pass works along the last axis and hands over transposed blocks, so the coefficients sit
    transposed (table.T) between the forward and inverse transforms and the output is upright.
    """
    x = _pass(blocks.sub_(128), "fdct", CONST_BITS - PASS1_BITS, True)  # rows (jfdctint)
    x = _pass(x, "fdct", CONST_BITS + PASS1_BITS, False)  # columns: 8x the orthonormal DCT, transposed
    # jcdctmgr.c: sign(x) * floor((|x| + 4 q) / 8 q), then dequantise (x q). |x| < 2^16, so the
    # correctly rounded quotient is exact at the ties and far from them elsewhere
    coef = x.abs().div_(8 * table.T).add_(0.5).floor_().copysign_(x).mul_(table.T)
    y = _pass(coef, "idct", CONST_BITS - PASS1_BITS, True)  # columns (jidctint)
    y = _pass(y, "idct", CONST_BITS + PASS1_BITS + 3, False)  # rows, also / 8
    return y.add_(128).clamp_(0, 255)


def _to_blocks(plane: torch.Tensor) -> torch.Tensor:
    """(N, H, W) with H, W multiples of 8 -> (N * H/8 * W/8, 8, 8) float64."""
    n, h, w = plane.shape
    return plane.view(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(-1, 8, 8).to(torch.float64)


def _from_blocks(blocks: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    return blocks.to(torch.int32).view(n, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(n, h, w)


def _pad_edge(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Repeat the last row and column of (N, H0, W0) up to (N, h, w)."""
    ph, pw = h - x.shape[-2], w - x.shape[-1]
    if ph == 0 and pw == 0:
        return x
    return F.pad(x[:, None].float(), (0, pw, 0, ph), mode="replicate")[:, 0].to(x.dtype)


def _ceil(v: int, m: int) -> int:
    return -(-v // m) * m


# ------------------------------------------------------------------------------------------ colour

SCALEBITS = 16
HALF = 1 << (SCALEBITS - 1)


def rgb_to_ycc(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) int32 -> Y, Cb, Cr planes (jccolor.c rgb_ycc_convert)."""
    r, g, b = rgb.unbind(1)
    f = lambda v: _fix(v, SCALEBITS)  # noqa: E731
    y = (f(0.29900) * r + f(0.58700) * g + f(0.11400) * b + HALF) >> SCALEBITS
    off = (128 << SCALEBITS) + HALF - 1
    cb = (-f(0.16874) * r - f(0.33126) * g + f(0.5) * b + off) >> SCALEBITS
    cr = (f(0.5) * r - f(0.41869) * g - f(0.08131) * b + off) >> SCALEBITS
    return y, cb, cr


def ycc_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """Y, Cb, Cr planes -> (N, 3, H, W) int32 (jdcolor.c ycc_rgb_convert)."""
    f = lambda v: _fix(v, SCALEBITS)  # noqa: E731
    cb, cr = cb - 128, cr - 128
    r = y + ((f(1.40200) * cr + HALF) >> SCALEBITS)
    g = y + ((-f(0.34414) * cb - f(0.71414) * cr + HALF) >> SCALEBITS)
    b = y + ((f(1.77200) * cb + HALF) >> SCALEBITS)
    return torch.stack([r, g, b], 1).clamp_(0, 255)


def downsample_h2v2(c: torch.Tensor) -> torch.Tensor:
    """2x2 means with the alternating rounding bias 1, 2, 1, 2... along each row (jcsample.c)."""
    n, h, w = c.shape
    s = c[:, 0::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 0::2] + c[:, 1::2, 1::2]
    bias = torch.tensor([1, 2], dtype=c.dtype, device=c.device).repeat(w // 4 + 1)[: w // 2]
    return (s + bias) >> 2


def upsample_h2v2_fancy(c: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Triangular 2x upsampling (jdsample.c h2v2_fancy_upsample) of (N, h2, w2) to (N, h, w).

    Each output sample weighs its nearest input 9/16, the two next 3/16 and the diagonal 1/16;
    the image edges repeat the last real sample.
    """
    h2, w2 = -(-h // 2), -(-w // 2)
    c = c[:, :h2, :w2]
    p = F.pad(c[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0].to(c.dtype)
    mid = p[:, 1:-1]
    above = 3 * mid + p[:, :-2]  # column sums for even output rows
    below = 3 * mid + p[:, 2:]  # odd output rows
    out = []
    for s in (above, below):
        cur = s[:, :, 1:-1]
        even = (3 * cur + s[:, :, :-2] + 8) >> 4
        odd = (3 * cur + s[:, :, 2:] + 7) >> 4
        out.append(torch.stack([even, odd], -1).reshape(c.shape[0], h2, 2 * w2))
    full = torch.stack(out, 2).reshape(c.shape[0], 2 * h2, 2 * w2)
    return full[:, :h, :w]


# ------------------------------------------------------------------------------------------ codec


def jpeg_round_trip(u8: torch.Tensor, quality: int, pixels_per_chunk: int = 1 << 17) -> torch.Tensor:
    """Decode(encode(images)) of uint8 (N, C, H, W), C = 1 (grayscale) or 3 (RGB, 4:2:0), as uint8.

    Images go through in chunks of about `pixels_per_chunk` pixels: the pipeline is some forty
    elementwise passes, much faster while a chunk stays in the CPU's cache (measured 30-40%).
    """
    step = max(1, pixels_per_chunk // (u8.shape[-2] * u8.shape[-1]))
    if len(u8) <= step:
        return _round_trip(u8, quality)
    return torch.cat([_round_trip(part, quality) for part in u8.split(step)])


def _round_trip(u8: torch.Tensor, quality: int) -> torch.Tensor:
    n, c, h, w = u8.shape
    dev = str(u8.device)
    luma, chroma = _table(quality, False, dev), _table(quality, True, dev)
    x = u8.to(torch.int32)
    hy, wy = _ceil(h, 8), _ceil(w, 8)
    if c == 1:
        y = _to_blocks(_pad_edge(x[:, 0], hy, wy))
        return _from_blocks(lossy_blocks(y, luma), n, hy, wy)[:, None, :h, :w].to(torch.uint8)
    y, cb, cr = rgb_to_ycc(x)
    ch, cw = -(-h // 2), -(-w // 2)  # real chroma samples
    hc, wc = _ceil(ch, 8), _ceil(cw, 8)
    # right edge: the full-size plane repeats its last column up to 2 x the chroma block width;
    # bottom: an odd height repeats its last row, then the subsampled plane repeats its own
    small = _pad_edge(downsample_h2v2(_pad_edge(torch.cat([cb, cr]), _ceil(h, 2), 2 * wc)), hc, wc)
    y = _from_blocks(lossy_blocks(_to_blocks(_pad_edge(y, hy, wy)), luma), n, hy, wy)
    small = _from_blocks(lossy_blocks(_to_blocks(small), chroma), 2 * n, hc, wc)
    up = upsample_h2v2_fancy(small, h, w)
    y = y[:, :h, :w]
    return ycc_to_rgb(y, up[:n], up[n:]).to(torch.uint8)
