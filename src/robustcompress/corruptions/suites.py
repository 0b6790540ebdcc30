"""Corruption definitions (function + severity table + size scaling) and the named suites.

A `Corruption` pairs a batched function with its parameters per severity at a reference image
size (32 for CIFAR-10-C, 28 for MNIST-C). Other sizes rescale the parameters that are lengths
in pixels by size / reference size (see `Corruption.params` and docs/corruptions.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from robustcompress.corruptions import _ops, blur, digital, geometric, noise, weather
from robustcompress.errors import ConfigError, DataError
from robustcompress.registry import Registry

# how a parameter that is a length in pixels follows the image size
FLOAT = "float"  # scaled by s = size / reference size
INT = "int"  # scaled and rounded, at least 1
GROW = "grow"  # scaled only for images larger than the reference (a disk cannot shrink below a pixel)


@dataclass(frozen=True)
class Corruption:
    """One corruption of a suite: `fn(x, params, generator)` on (N, C, H, W) floats in [0, 1]."""

    name: str
    fn: Callable
    table: tuple[dict, ...]  # parameters per severity (index 0 = severity 1) at `ref_size`
    ref_size: int = 32
    lengths: dict[str, str] = field(default_factory=dict)
    random: bool = True  # draws random numbers (differs between seeds)
    # all its random numbers come from one draw of a tensor with the images as leading dimension,
    # so consecutive sub-blocks drawing from one CPU generator get the whole block's numbers
    # (corrupt_quantized relies on it)
    draws_in_image_order: bool = False
    colour: bool = False  # defined on RGB: grayscale images go to RGB and back (luma)
    pixel_monotone: bool = True  # the reference changes pixels more as severity rises
    summary: str = ""

    @property
    def severities(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.table) + 1))

    def params(self, severity: int, size: int | None = None) -> dict:
        """Parameters at `severity` for square-ish images whose shorter side is `size`."""
        if severity not in self.severities:
            raise ConfigError(
                f"severity {severity} does not exist for {self.name}; choose from {list(self.severities)}"
            )
        p = dict(self.table[severity - 1])
        s = (size or self.ref_size) / self.ref_size
        for key, kind in self.lengths.items():
            if key not in p:
                continue
            if kind == FLOAT:
                p[key] = p[key] * s
            elif kind == INT:
                p[key] = max(1, int(round(p[key] * s)))
            elif kind == GROW and s > 1:
                p[key] = p[key] * s
        return p

    def __call__(
        self,
        x: torch.Tensor,
        severity: int,
        generator: torch.Generator | None = None,
        seed: int = 0,
        frost_images: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Corrupt a batch (float, (N, C, H, W) in [0, 1]); returns floats in [0, 1], not quantised."""
        check_images(x)
        p = self.params(severity, min(x.shape[-2:]))
        if len(x) == 0:
            return x.clone()
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        grey = x.shape[1] == 1 and self.colour
        inp = x.expand(-1, 3, -1, -1) if grey else x
        kwargs = {"frost_images": frost_images} if self.fn is weather.frost else {}
        out = self.fn(inp, p, generator, **kwargs)
        if grey:
            out = _ops.to_gray(out, _ops.SKIMAGE_GRAY).clamp_(0, 1)
        return out.to(x.dtype)


def check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"corruptions take float images (N, C, H, W) in [0, 1]; got {shape}")
    if x.shape[1] not in (1, 3):
        raise DataError(f"corruptions take 1- or 3-channel images; got {x.shape[1]} channels")
    if min(x.shape[-2:]) < 8:
        raise DataError(f"images of {x.shape[-2]}x{x.shape[-1]} are too small to corrupt (at least 8x8)")


# --------------------------------------------------------------------------------------------- CIFAR-10-C


def _table(keys: str, *rows) -> tuple[dict, ...]:
    names = keys.split()
    return tuple(dict(zip(names, r if isinstance(r, tuple) else (r,))) for r in rows)


def _zoom_factors(end: float) -> tuple[float, ...]:
    # the reference's np.arange(1, end, 0.01): 7, 12, 16, 21 and 26 factors
    return tuple(float(z) for z in np.arange(1, end, 0.01))


CIFAR_C = [
    Corruption(
        "gaussian_noise",
        noise.gaussian_noise,
        _table("sigma", 0.04, 0.06, 0.08, 0.09, 0.10),
        summary="additive Gaussian noise",
        draws_in_image_order=True,
    ),
    Corruption(
        "shot_noise",
        noise.shot_noise,
        _table("lam", 500, 250, 100, 75, 50),
        summary="Poisson photon noise",
        draws_in_image_order=True,
    ),
    Corruption(
        "impulse_noise",
        noise.impulse_noise,
        _table("amount", 0.01, 0.02, 0.03, 0.05, 0.07),
        summary="salt-and-pepper noise",
        draws_in_image_order=True,
    ),
    Corruption(
        "defocus_blur",
        blur.defocus_blur,
        _table("radius alias_blur", (0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        lengths={"radius": GROW},
        random=False,
        summary="anti-aliased disk blur",
    ),
    Corruption(
        "glass_blur",
        blur.glass_blur,
        _table("sigma delta iterations", (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        lengths={"sigma": FLOAT, "delta": INT},
        pixel_monotone=False,
        summary="blur, local pixel shuffle, blur",
    ),
    Corruption(
        "motion_blur",
        blur.motion_blur,
        _table("radius sigma", (6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        lengths={"radius": INT, "sigma": FLOAT},
        summary="one-sided line blur at a random angle",
    ),
    Corruption(
        "zoom_blur",
        blur.zoom_blur,
        _table("factors", *[(_zoom_factors(e),) for e in (1.06, 1.11, 1.16, 1.21, 1.26)]),
        random=False,
        summary="mean of centre zooms",
    ),
    Corruption(
        "snow",
        weather.snow,
        _table(
            "loc scale zoom threshold blur_radius blur_sigma mix",
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        lengths={"blur_radius": INT, "blur_sigma": FLOAT},
        summary="motion-blurred snow flakes",
    ),
    Corruption(
        "frost",
        weather.frost,
        _table("image_coef frost_coef", (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        colour=True,
        pixel_monotone=False,
        summary="frost texture blended over the image",
    ),
    Corruption(
        "fog",
        weather.fog,
        _table("strength decay", (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        summary="plasma-fractal fog",
    ),
    Corruption(
        "brightness",
        digital.brightness,
        _table("shift", 0.05, 0.1, 0.15, 0.2, 0.3),
        random=False,
        colour=True,
        summary="HSV value shift",
    ),
    Corruption(
        "contrast",
        digital.contrast,
        _table("factor", 0.75, 0.5, 0.4, 0.3, 0.15),
        random=False,
        summary="pull towards the mean",
    ),
    Corruption(
        "elastic_transform",
        digital.elastic_transform,
        _table(
            "alpha sigma affine",
            (0.0, 0.0, 2.56),
            (1.6, 6.4, 2.24),
            (2.56, 1.92, 1.92),
            (3.2, 1.28, 1.6),
            (3.2, 0.96, 0.96),
        ),
        lengths={"alpha": FLOAT, "sigma": FLOAT, "affine": FLOAT},
        pixel_monotone=False,
        summary="random affine + smooth displacement field",
    ),
    Corruption(
        "pixelate",
        digital.pixelate,
        _table("scale", 0.95, 0.9, 0.85, 0.75, 0.65),
        random=False,
        summary="box down- and up-sampling",
    ),
    Corruption(
        "jpeg_compression",
        digital.jpeg_compression,
        _table("quality", 80, 65, 58, 50, 40),
        random=False,
        summary="JPEG round trip (libjpeg arithmetic in torch)",
    ),
]
CIFAR_C_EXTRAS = [
    Corruption(
        "speckle_noise",
        noise.speckle_noise,
        _table("sigma", 0.06, 0.1, 0.12, 0.16, 0.2),
        summary="multiplicative Gaussian noise",
        draws_in_image_order=True,
    ),
    Corruption(
        "gaussian_blur",
        blur.gaussian_blur,
        _table("sigma", 0.4, 0.6, 0.7, 0.8, 1.0),
        lengths={"sigma": FLOAT},
        random=False,
        summary="Gaussian blur",
    ),
    Corruption(
        "spatter",
        weather.spatter,
        _table(
            "loc scale sigma threshold intensity mud",
            (0.62, 0.1, 0.7, 0.7, 0.5, False),
            (0.65, 0.1, 0.8, 0.7, 0.5, False),
            (0.65, 0.3, 1.0, 0.69, 0.5, False),
            (0.65, 0.1, 0.7, 0.69, 0.6, True),
            (0.65, 0.1, 0.5, 0.68, 0.6, True),
        ),
        lengths={"sigma": FLOAT},
        colour=True,
        pixel_monotone=False,
        summary="liquid (1-3) or mud (4-5) splashes",
    ),
    Corruption(
        "saturate",
        digital.saturate,
        _table("scale shift", (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        random=False,
        colour=True,
        pixel_monotone=False,
        summary="HSV saturation scale and shift",
    ),
]

# --------------------------------------------------------------------------------------------- MNIST-C


def _one(name, fn, params, **kw) -> Corruption:
    return Corruption(name, fn, (params,), ref_size=28, **kw)


MNIST_C = [
    _one("shot_noise", noise.shot_noise, {"lam": 3}, summary="Poisson noise", draws_in_image_order=True),
    _one(
        "impulse_noise",
        noise.impulse_noise,
        {"amount": 0.17},
        summary="salt and pepper",
        draws_in_image_order=True,
    ),
    _one(
        "glass_blur",
        blur.glass_blur,
        {"sigma": 0.7, "delta": 1, "iterations": 2, "swap_prob": 0.5},
        lengths={"sigma": FLOAT, "delta": INT},
        summary="blur, shuffle, blur",
    ),
    _one(
        "motion_blur",
        blur.motion_blur,
        {"radius": 10, "sigma": 3},
        lengths={"radius": INT, "sigma": FLOAT},
        summary="line blur",
    ),
    _one("shear", geometric.shear, {"angle": 0.4}, summary="shear by 0.4 rad, random direction"),
    _one("scale", geometric.scale, {"factor": 0.7}, random=False, summary="shrink to 70%"),
    _one("rotate", geometric.rotate, {"angle": 0.4}, summary="rotate by 0.4 rad, random direction"),
    _one(
        "brightness", digital.brightness, {"shift": 0.5}, random=False, colour=True, summary="HSV value + 0.5"
    ),
    _one(
        "translate",
        geometric.translate,
        {"pixels": 3},
        lengths={"pixels": INT},
        summary="shift 3 px on each axis",
    ),
    _one("stripe", geometric.stripe, {}, random=False, summary="invert the outer quarters"),
    _one("fog", weather.fog, {"strength": 3.0, "decay": 1.4, "mapsize": 256}, summary="plasma fog"),
    _one(
        "spatter",
        weather.spatter,
        {
            "loc": 0.65,
            "scale": 0.3,
            "sigma": 1.0,
            "threshold": 0.65,
            "intensity": 1.5,
            "mud": True,
            "color": (63 / 255, 63 / 255, 63 / 255),
        },
        lengths={"sigma": FLOAT, "intensity": FLOAT},
        summary="grey mud splashes",
    ),
    _one("dotted_line", geometric.dotted_line, {}, summary="a dashed line"),
    _one("zigzag", geometric.zigzag, {}, summary="a zigzag stroke"),
    _one(
        "canny_edges",
        geometric.canny_edges,
        {"sigma": 1.0, "low": 0.1, "high": 0.2},
        lengths={"sigma": FLOAT},
        random=False,
        summary="Canny edge map",
    ),
]


@dataclass(frozen=True)
class Suite:
    """A named benchmark: the corruptions averaged into mCE and the extras reported beside them."""

    name: str
    corruptions: dict[str, Corruption]
    extras: dict[str, Corruption]
    reference: str

    @property
    def severities(self) -> tuple[int, ...]:
        return next(iter(self.corruptions.values())).severities

    def names(self, extras: bool = True) -> list[str]:
        return list(self.corruptions) + (list(self.extras) if extras else [])

    def get(self, name: str) -> Corruption:
        found = self.corruptions.get(name) or self.extras.get(name)
        if found is None:
            raise ConfigError(
                f"unknown corruption {name!r} in suite {self.name}; choose from {', '.join(self.names())}"
            )
        return found

    def select(self, names: list[str] | None, severities: list[int] | None) -> tuple[list[str], list[int]]:
        """Validate a choice of corruptions (None = benchmark + extras) and severities (None = all)."""
        chosen = self.names() if names is None else list(names)
        for n in chosen:
            self.get(n)
        sev = list(self.severities) if severities is None else list(severities)
        bad = [s for s in sev if s not in self.severities]
        if bad or not sev:
            raise ConfigError(
                f"severities {bad or sev} not in suite {self.name}; choose from {list(self.severities)}"
            )
        return chosen, sev


SUITES: Registry[Suite] = Registry("corruption suite")
SUITES.register("cifar-c")(
    Suite(
        "cifar-c",
        {c.name: c for c in CIFAR_C},
        {c.name: c for c in CIFAR_C_EXTRAS},
        "Hendrycks and Dietterich 2019, CIFAR-10-C parameters (make_cifar_c.py)",
    )
)
SUITES.register("mnist-c")(
    Suite("mnist-c", {c.name: c for c in MNIST_C}, {}, "Mu and Gilmer 2019, MNIST-C (one severity each)")
)

CORRUPTIONS: Registry[Corruption] = Registry("corruption")
for _c in CIFAR_C + CIFAR_C_EXTRAS:
    CORRUPTIONS.register(_c.name)(_c)


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int,
    *,
    suite: str = "cifar-c",
    seed: int = 0,
    generator: torch.Generator | None = None,
    frost_images: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Corrupt float images (N, C, H, W) in [0, 1] with `name` at `severity` from `suite`."""
    return SUITES.get(suite).get(name)(x, severity, generator=generator, seed=seed, frost_images=frost_images)


CHUNK = 1000  # images per generator: results do not depend on the caller's batch size
SUB_BLOCK_PIXELS = 1 << 17  # pixels per sub-block of a deterministic corruption (128 CIFAR images)


def chunk_generator(seed: int, suite: str, name: str, severity: int, chunk: int, device) -> torch.Generator:
    """The generator of one block of CHUNK images: a stable function of everything that names it."""
    key = zlib.crc32(f"{seed}/{suite}/{name}/{severity}/{chunk}".encode())
    return torch.Generator(device=device).manual_seed(key)


def corrupt_quantized(
    x: torch.Tensor,
    name: str,
    severity: int,
    *,
    suite: str = "cifar-c",
    seed: int = 0,
    start: int = 0,
    frost_images: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Corrupt images x[i] = image `start + i` of a dataset, returning uint8 (N, C, H, W).

    Random draws come from one generator per block of CHUNK dataset images, so the same image gets
    the same corruption whatever the caller's batch size, as long as batches are whole blocks
    starting at a multiple of CHUNK; this is what makes on-the-fly evaluation give the same numbers
    as a written dataset.
    """
    if start % CHUNK:
        raise ConfigError(
            f"corrupt_quantized batches must start at a multiple of {CHUNK} images, not {start}"
        )
    c = SUITES.get(suite).get(name)
    out = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    # On the CPU, corruptions that treat every image on its own run on small sub-blocks: their
    # temporaries stay in the cache and their memory is reused, where fresh full-block tensors
    # cost more in page faults than in arithmetic. Same pixels: deterministic ones do not draw,
    # the noises' single draw continues the same CPU generator stream. Others draw per CHUNK.
    # Sub-blocks are whole multiples of 16 images: torch's CPU normal sampler works in groups of 16
    # values, so their draws line up with the block's whatever the image size.
    split = x.device.type == "cpu" and (not c.random or c.draws_in_image_order)
    step = 16 * max(1, SUB_BLOCK_PIXELS // (16 * x.shape[-2] * x.shape[-1])) if split else CHUNK
    for i in range(0, len(x), CHUNK):
        g = chunk_generator(seed, suite, name, severity, (start + i) // CHUNK, x.device)
        for j in range(i, min(i + CHUNK, len(x)), step):
            block = x[j : min(j + step, i + CHUNK)]
            result = c(block, severity, generator=g, frost_images=frost_images)
            # a result that shares no memory with the images is ours to overwrite while quantising
            fresh = result.untyped_storage().data_ptr() != block.untyped_storage().data_ptr()
            out[j : j + len(block)] = _ops.quantize_uint8(result, in_place=fresh)
    return out
