"""Semantic transformation families: a named transformation with a parameter distribution.

    from robustcompress.certification.transforms import make_family
    fam = make_family("rotation+brightness", degrees=15, brightness=0.2)
    x_t = fam.sample(x, generator)        # each image gets its own independently drawn transformation
    fam.describe()                        # "rotation(angle ~ U[-15, 15] degrees) then brightness(...)"

A spec names one family or a composition joined by "+". Each part is `name` or `name:arg:arg`,
the args filling the family's parameters in order (`rotation:30`, `corruption:fog:3`); keyword
parameters go to every part that takes them. Probabilistic certification (semantic.py) and the
C-SAM stage draw their transformations here; users add their own with `register_transform`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from robustcompress.errors import ConfigError, DataError
from robustcompress.registry import Registry

__all__ = [
    "TRANSFORMS",
    "Compose",
    "TransformFamily",
    "make_family",
    "parse_specs",
    "register_transform",
]


class TransformFamily:
    """A distribution over transformations; `sample` applies an independent draw to each image."""

    name: str = "transform"

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Transform each image of x (N, C, H, W) by its own draw; subclasses override this."""
        raise NotImplementedError

    def distribution(self) -> str:
        """The parameter distribution in words, for reports."""
        return ""

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4 or not x.is_floating_point():
            raise DataError(f"transformations take float images (N, C, H, W) in [0, 1]; got {tuple(x.shape)}")
        if len(x) == 0:
            return x.clone()
        out = self.apply(x, generator)
        if out.shape != x.shape:
            raise DataError(
                f"transformation {self.name} changed the shape {tuple(x.shape)} -> {tuple(out.shape)}"
            )
        return out.to(x.dtype).clamp_(0, 1)

    def describe(self) -> str:
        d = self.distribution()
        return f"{self.name}({d})" if d else self.name


class Compose(TransformFamily):
    """Parts applied in order, each with its own independent draw."""

    def __init__(self, parts: list[TransformFamily]):
        self.parts = parts
        self.name = "+".join(p.name for p in parts)

    def apply(self, x, generator):
        for p in self.parts:
            x = p.sample(x, generator)
        return x

    def describe(self) -> str:
        return " then ".join(p.describe() for p in self.parts)


TRANSFORMS: Registry[Callable[..., TransformFamily]] = Registry("transformation")


class _FunctionFamily(TransformFamily):
    """Wraps a user function fn(x, generator, **params) -> x."""

    def __init__(self, name: str, fn: Callable, params: dict):
        self.name, self.fn, self.params = name, fn, params

    def apply(self, x, generator):
        return self.fn(x, generator, **self.params)

    def distribution(self) -> str:
        doc = (inspect.getdoc(self.fn) or "").split("\n")[0]
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return "; ".join(s for s in (doc, args) if s)


def register_transform(name: str) -> Callable:
    """Register a TransformFamily subclass (its keyword arguments are its parameters), or a
    function `fn(x, generator, **params) -> x` that transforms each image by its own draw."""

    def add(obj):
        if isinstance(obj, type) and issubclass(obj, TransformFamily):
            TRANSFORMS.register(name)(obj)
        else:
            params = list(inspect.signature(obj).parameters.values())[2:]

            def factory(*args, **kwargs):
                bound = inspect.signature(obj).bind_partial(None, None, *args, **kwargs).arguments
                bound = {k: v for k, v in bound.items() if k in {p.name for p in params}}
                return _FunctionFamily(name, obj, bound)

            factory.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
            TRANSFORMS.register(name)(factory)
        return obj

    return add


# --------------------------------------------------------------------------------------------- draws


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    return (low + (high - low) * u).to(device)


def _nonneg(name: str, **values: float) -> None:
    for key, v in values.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{name}: {key} must be a number >= 0; got {v!r}")


def _affine(x: torch.Tensor, lin: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out(p) = x(lin @ (p - c) + c + shift) in pixel coordinates, c the centre, zeros outside."""
    n, _, h, w = x.shape
    # pixel -> normalised coordinates (align_corners=False): u = (2 p + 1) / size - 1 = p / (size/2) + ...
    s = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=lin.device)
    theta = torch.empty(n, 2, 3, dtype=torch.float64, device=lin.device)
    theta[:, :, :2] = lin * s[None, None, :] / s[None, :, None]  # S^-1 lin S
    theta[:, :, 2] = shift / s
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------- families


@register_transform("identity")
class Identity(TransformFamily):
    """No change: PCA under it is the clean accuracy (a sanity check)."""

    name = "identity"

    def apply(self, x, generator):
        return x.clone()


@register_transform("rotation")
class Rotation(TransformFamily):
    """Rotation about the centre by an angle ~ U[-degrees, degrees]; black fills the corners."""

    def __init__(self, degrees: float = 10.0):
        _nonneg("rotation", degrees=degrees)
        self.name, self.degrees = "rotation", float(degrees)

    def distribution(self):
        return f"angle ~ U[-{self.degrees:g}, {self.degrees:g}] degrees, bilinear, zero fill"

    def apply(self, x, generator):
        a = torch.deg2rad(_uniform(len(x), -self.degrees, self.degrees, generator, x.device))
        # output pixel p samples the input at R(-a) p: the content turns by a
        lin = torch.stack([a.cos(), a.sin(), -a.sin(), a.cos()], dim=1).view(-1, 2, 2)
        return _affine(x, lin, torch.zeros(len(x), 2, dtype=torch.float64, device=x.device))


@register_transform("translation")
class Translation(TransformFamily):
    """Shift by whole pixels, each axis ~ uniform over {-pixels, ..., pixels}; black fills the border."""

    def __init__(self, pixels: int = 2):
        _nonneg("translation", pixels=pixels)
        if int(pixels) != pixels:
            raise ConfigError(f"translation: pixels must be a whole number; got {pixels!r}")
        self.name, self.pixels = "translation", int(pixels)

    def distribution(self):
        return f"dx, dy ~ U{{-{self.pixels}, ..., {self.pixels}}} pixels, zero fill"

    def apply(self, x, generator):
        n, p = len(x), self.pixels
        d = torch.randint(-p, p + 1, (n, 2), generator=generator, device=generator.device).to(x.device)
        eye = torch.eye(2, dtype=torch.float64, device=x.device).expand(n, 2, 2)
        return _affine(x, eye, -d.double())


@register_transform("scaling")
class Scaling(TransformFamily):
    """Zoom about the centre by a factor ~ U[1 - scale, 1 + scale]; black fills a shrunk border."""

    def __init__(self, scale: float = 0.1):
        _nonneg("scaling", scale=scale)
        if scale >= 1:
            raise ConfigError(f"scaling: scale must be below 1 (factors 1 +- scale); got {scale}")
        self.name, self.scale = "scaling", float(scale)

    def distribution(self):
        return f"factor ~ U[{1 - self.scale:g}, {1 + self.scale:g}], bilinear, zero fill"

    def apply(self, x, generator):
        f = _uniform(len(x), 1 - self.scale, 1 + self.scale, generator, x.device)
        lin = torch.eye(2, dtype=torch.float64, device=x.device)[None] / f[:, None, None]
        return _affine(x, lin, torch.zeros(len(x), 2, dtype=torch.float64, device=x.device))


@register_transform("brightness")
class Brightness(TransformFamily):
    """Add b ~ U[-brightness, brightness] to every pixel."""

    def __init__(self, brightness: float = 0.2):
        _nonneg("brightness", brightness=brightness)
        self.name, self.brightness = "brightness", float(brightness)

    def distribution(self):
        return f"x + b, b ~ U[-{self.brightness:g}, {self.brightness:g}]"

    def apply(self, x, generator):
        b = _uniform(len(x), -self.brightness, self.brightness, generator, x.device)
        return x + b.to(x.dtype).view(-1, 1, 1, 1)


@register_transform("contrast")
class Contrast(TransformFamily):
    """Scale each image's deviation from its mean by k ~ U[1 - contrast, 1 + contrast]."""

    def __init__(self, contrast: float = 0.2):
        _nonneg("contrast", contrast=contrast)
        self.name, self.contrast = "contrast", float(contrast)

    def distribution(self):
        return f"mean + k (x - mean), k ~ U[{1 - self.contrast:g}, {1 + self.contrast:g}]"

    def apply(self, x, generator):
        k = _uniform(len(x), 1 - self.contrast, 1 + self.contrast, generator, x.device).to(x.dtype)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return mean + k.view(-1, 1, 1, 1) * (x - mean)


@register_transform("gaussian_blur")
class GaussianBlur(TransformFamily):
    """Gaussian blur with a standard deviation ~ U[0, sigma] pixels (reflect padding)."""

    def __init__(self, sigma: float = 1.0):
        _nonneg("gaussian_blur", sigma=sigma)
        self.name, self.sigma = "gaussian_blur", float(sigma)

    def distribution(self):
        return f"std ~ U[0, {self.sigma:g}] pixels, kernel radius ceil(3 std_max), reflect padding"

    def apply(self, x, generator):
        n, c, h, w = x.shape
        s = _uniform(n, 0, self.sigma, generator, x.device).clamp_min(1e-6)
        r = max(1, math.ceil(3 * self.sigma))
        r = min(r, h - 1, w - 1)  # reflect padding needs the radius below the image size
        t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float64)
        k = torch.exp(-(t[None] ** 2) / (2 * s[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(c, 0)  # (N C, 2r + 1)
        y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
        y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
        y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
        return y.view(n, c, h, w)


@register_transform("corruption")
class CorruptionFamily(TransformFamily):
    """A corruption of the suite (robustcompress.corruptions) at a fixed severity; its own
    randomness (noise, fog pattern, ...) is drawn independently for each image."""

    def __init__(self, corruption: str = "gaussian_noise", severity: int = 3):
        from robustcompress.corruptions import CORRUPTIONS

        self.corruption = CORRUPTIONS.get(str(corruption))
        if int(severity) != severity:
            raise ConfigError(f"corruption severity must be a whole number; got {severity!r}")
        self.severity = int(severity)
        self.corruption.params(self.severity)  # validates the severity
        self.name = f"corruption:{self.corruption.name}:{self.severity}"

    def distribution(self):
        return f"severity {self.severity}, {self.corruption.summary or 'suite parameters'}"

    def describe(self):
        return f"{self.name}({self.distribution()})"

    def apply(self, x, generator):
        return self.corruption(x, self.severity, generator=generator)


# --------------------------------------------------------------------------------------------- specs


def parse_scalar(text: str) -> int | float | str:
    """'3' -> 3, '0.5' -> 0.5, anything else stays text: spec arguments and per-example cells."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _accepts(factory: Callable) -> set[str]:
    return set(inspect.signature(factory).parameters)


def _build(part: str, params: dict, used: set[str]) -> TransformFamily:
    name, *args = part.strip().split(":")
    factory = TRANSFORMS.get(name)
    accepted = _accepts(factory)
    kwargs = {k: v for k, v in params.items() if k in accepted}
    used.update(kwargs)
    try:
        fam = factory(*[parse_scalar(a) for a in args], **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"transformation {part!r}: {e}; its parameters are {', '.join(sorted(accepted)) or '(none)'}"
        ) from None
    if args and not isinstance(fam, CorruptionFamily) and name not in {"identity"}:
        fam.name = part.strip()  # "rotation:30" keeps its parameter in the name (metric names differ)
    return fam


def make_family(spec: str | list[str], **params) -> TransformFamily:
    """A family from a spec ("rotation", "rotation:30+brightness", "corruption:fog:3") or a list
    of parts composed in order; keyword parameters go to every part that takes them."""
    parts = spec.split("+") if isinstance(spec, str) else list(spec)
    parts = [p for p in (p.strip() for p in parts) if p]
    if not parts:
        raise ConfigError(f"empty transformation spec {spec!r}; choose from {', '.join(TRANSFORMS.names())}")
    used: set[str] = set()
    fams = [_build(p, params, used) for p in parts]
    unused = sorted(set(params) - used)
    if unused:
        known = sorted(set().union(*(_accepts(TRANSFORMS.get(p.split(":")[0])) for p in parts)))
        raise ConfigError(
            f"parameters {unused} are taken by no part of {spec!r}; "
            f"its parameters are {', '.join(known) or '(none)'}"
        )
    return fams[0] if len(fams) == 1 else Compose(fams)


def parse_specs(text: str | list[str]) -> list[str]:
    """Comma-separated family specs (each measured on its own) -> validated list."""
    specs = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    for s in specs:
        make_family(s)
    return specs
