"""Decision boundaries: pictures of them and numbers that can go in a table.

- `pca_plane`: paper 002's Figure 7. A grid in the plane of the first two principal components
  of the test inputs, mapped back to input space (clipped to [0, 1]) and coloured by the predicted
  class, darker where the model is more confident. Jagged, pale maps mean fragmented boundaries.
- `cross_sections`: Fawzi et al. (CVPR 2018). The plane through a test image spanned by the
  adversarial direction and a random orthogonal one; boundaries are close and curved along the
  first and far and flat along the second, and robust training pushes them out.
- `boundary_distances`: per image, the distance to the boundary along the adversarial direction
  and along random directions (scan, then bisection on the predicted label), their ratio and a
  curvature estimate. Distances are measured in the attack's norm (L-inf or L2) on images clipped
  to [0, 1]; a ray that meets no boundary within `max_dist` is censored and counted at the cap.

Every model compared in one figure shares the axes, the extent and the class colours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.attacks import eval_mode, make_attack
from robustcompress.device import model_device
from robustcompress.errors import ConfigError

Norm = Literal["linf", "l2"]


# -- small tensor helpers ---------------------------------------------------------------------------
def _norms(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = t.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _unit(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Each row scaled to norm 1 in the given norm; all-zero rows stay zero."""
    n = _norms(t, norm).view(-1, *([1] * (t.dim() - 1)))
    return torch.where(n > 0, t / n.clamp_min(1e-30), torch.zeros_like(t))


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities for images x (on x's device), in eval mode, in batches."""
    device = model_device(model)
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            out.append(F.softmax(model(x[i : i + batch_size].to(device)).float(), dim=1).to(x.device))
    return torch.cat(out)


def has_input_gradients(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model can give input gradients: its own answer if it states one, else a probe."""
    stated = getattr(model, "has_input_gradients", None)
    if stated is not None:
        return bool(stated() if callable(stated) else stated)
    probe = x[:1].detach().to(model_device(model)).requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        out = model(probe)
        if not out.requires_grad:  # e.g. ONNX Runtime behind an nn.Module
            return False
        grad = torch.autograd.grad(out.float().sum(), probe, allow_unused=True)[0]
    return grad is not None  # None: the output does not depend on the input at all


def max_distance(norm: Norm, x: torch.Tensor) -> float:
    """The largest distance that means anything in [0, 1]: the box's diameter in the norm."""
    return 1.0 if norm == "linf" else math.sqrt(x[0].numel())


# -- directions ------------------------------------------------------------------------------------
def random_directions(
    shape: torch.Size | tuple[int, ...], norm: Norm, generator: torch.Generator
) -> torch.Tensor:
    """Unit random directions: random signs for L-inf (a corner of the cube), Gaussian for L2."""
    if norm == "linf":
        return torch.randint(0, 2, tuple(shape), generator=generator).float() * 2 - 1
    return _unit(torch.randn(tuple(shape), generator=generator), "l2")


def orthogonal_to(v: torch.Tensor, u: torch.Tensor, norm: Norm) -> torch.Tensor:
    """v with its (Euclidean) component along u removed, rescaled to norm 1."""
    uf, vf = u.flatten(1), v.flatten(1)
    coef = (uf * vf).sum(1, keepdim=True) / (uf * uf).sum(1, keepdim=True).clamp_min(1e-30)
    return _unit((vf - coef * uf).view_as(v), norm)


def adversarial_directions(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    norm: Norm,
    *,
    method: Literal["gradient", "pgd"] = "pgd",
    eps: float = 0.1,
    steps: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """Unit directions that leave `labels` fastest (rows are zero where the input gradient is zero).

    gradient: the sign of the loss gradient (L-inf) or the gradient itself (L2), as FGSM/FGM.
    pgd: the perturbation PGD finds inside the eps-ball, normalised; where it is zero, the gradient.
    """
    device = model_device(model)
    x, labels = x.to(device), labels.to(device)
    with eval_mode(model), torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(model(xr), labels, reduction="sum")
        grad = torch.autograd.grad(loss, xr, allow_unused=True)[0] if loss.requires_grad else None
    grad = torch.zeros_like(x) if grad is None else grad.detach()
    direction = _unit(grad.sign() if norm == "linf" else grad, norm)
    if method == "pgd":
        attack = make_attack("pgd", model, eps, norm=norm, steps=steps, seed=seed)
        with eval_mode(model):
            delta = attack.generate(x, labels) - x
        usable = (_norms(delta, norm) > 1e-7) & (_norms(grad, norm) > 0)
        direction = torch.where(_expand(usable, x), _unit(delta, norm), direction)
    elif method != "gradient":
        raise ConfigError(f"unknown direction method {method!r}; use gradient or pgd")
    return direction


# -- line search -----------------------------------------------------------------------------------
@torch.no_grad()
def distance_along(
    model: nn.Module,
    start: torch.Tensor,
    direction: torch.Tensor,
    labels: torch.Tensor,
    norm: Norm,
    max_dist: float,
    *,
    scan: int = 32,
    bisect: int = 16,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from `start` to the first point of each ray where the prediction leaves `labels`.

    The ray is clip(start + t * direction, 0, 1) for t in (0, max_dist]; a scan of `scan` evenly
    spaced steps brackets the first change, `bisect` halvings narrow it (error max_dist / scan /
    2**bisect). Returns (distance, found): the norm of the clipped displacement at the boundary,
    or at max_dist where no change was found (found False: the ray is censored).
    """
    n = len(start)
    device = start.device
    if n == 0:
        return torch.zeros(0, device=device), torch.zeros(0, dtype=torch.bool, device=device)

    def point(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (start[rows] + _expand(t, start[rows]) * direction[rows]).clamp(0.0, 1.0)

    def changed(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return predict_proba(model, point(t, rows), batch_size).argmax(1) != labels[rows]

    everyone = torch.arange(n, device=device)
    step = max_dist / scan
    lo = torch.zeros(n, device=device)
    hi = torch.full((n,), max_dist, device=device)
    found = torch.zeros(n, dtype=torch.bool, device=device)
    ts = torch.arange(1, scan + 1, device=device, dtype=torch.float32) * step
    chunk = max(1, batch_size // max(n, 1))
    for i in range(0, scan, chunk):  # several scan steps per model call for small batches
        todo = everyone[~found]
        if todo.numel() == 0:
            break
        block = ts[i : i + chunk]
        rows = todo.repeat(len(block))
        t = block.repeat_interleave(len(todo))
        flip = changed(t, rows).view(len(block), len(todo))
        first = torch.where(flip.any(0), flip.float().argmax(0), torch.full_like(todo, -1))
        hit = first >= 0
        idx = todo[hit]
        hi[idx] = block[first[hit]]
        lo[idx] = hi[idx] - step
        found[idx] = True
    idx = everyone[found]
    for _ in range(bisect if idx.numel() else 0):
        mid = (lo[idx] + hi[idx]) / 2
        flip = changed(mid, idx)
        hi[idx] = torch.where(flip, mid, hi[idx])
        lo[idx] = torch.where(flip, lo[idx], mid)
    dist = _norms(point(hi, everyone) - start, norm)
    return dist, found


# -- the numbers -----------------------------------------------------------------------------------
@dataclass
class BoundaryDistances:
    """Per-image distances to the decision boundary (None where the model has no input gradients)."""

    norm: Norm
    max_dist: float
    dist_random: torch.Tensor  # (N, R)
    found_random: torch.Tensor  # (N, R)
    dist_adv: torch.Tensor | None = None  # (N,)
    found_adv: torch.Tensor | None = None
    curvature: torch.Tensor | None = None  # (N,), nan where undefined

    def ratio(self) -> torch.Tensor | None:
        """Per image: adversarial distance over the median random one (images whose adversarial ray
        found a boundary; a censored random distance makes the ratio an upper bound)."""
        if self.dist_adv is None:
            return None
        rand = self.dist_random.median(dim=1).values
        ok = self.found_adv & (rand > 0)
        return self.dist_adv[ok] / rand[ok]

    def metrics(self, prefix: str = "analysis.boundary.") -> dict[str, float | int]:
        out: dict[str, float | int] = {
            f"{prefix}n_images": len(self.dist_random),
            f"{prefix}max_dist": self.max_dist,
            f"{prefix}has_gradients": int(self.dist_adv is not None),
            f"{prefix}dist_random": _median(self.dist_random.median(dim=1).values),
            f"{prefix}censored_random": _share(~self.found_random),
        }
        if self.dist_adv is not None:
            out[f"{prefix}dist_adv"] = _median(self.dist_adv)
            out[f"{prefix}censored_adv"] = _share(~self.found_adv)
            ratio = self.ratio()
            if ratio is not None and ratio.numel():
                out[f"{prefix}adv_over_random"] = _median(ratio)
            if self.curvature is not None and (~self.curvature.isnan()).any():
                out[f"{prefix}curvature"] = _median(self.curvature[~self.curvature.isnan()])
        return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def _median(t: torch.Tensor) -> float:
    return float(t.float().median()) if t.numel() else float("nan")


def _share(t: torch.Tensor) -> float:
    return float(t.float().mean()) if t.numel() else float("nan")


def boundary_distances(
    model: nn.Module,
    x: torch.Tensor,
    *,
    norm: Norm = "linf",
    eps: float = 0.1,
    n_random: int = 8,
    max_dist: float | None = None,
    direction: Literal["gradient", "pgd"] = "pgd",
    steps: int = 20,
    seed: int = 0,
    scan: int = 32,
    bisect: int = 16,
    batch_size: int = 512,
    gradients: bool | None = None,
) -> BoundaryDistances:
    """Distances from each image of x to the model's decision boundary (its own predicted label).

    Along the adversarial direction (see `adversarial_directions`) and `n_random` random directions,
    plus a curvature estimate: with r0 the adversarial distance and v a random direction orthogonal
    to it, the distances r+ and r- along the adversarial direction from x +- (r0/2) v give
    kappa = 4 (r+ + r- - 2 r0) / r0, the boundary's curvature times r0 in that plane (0 for a flat
    boundary, -1 when the class region is a ball centred on x). Models without input gradients
    (`gradients` False, or found so by a probe) get the random directions only.
    """
    if n_random < 1:
        raise ConfigError(f"n_random must be >= 1; got {n_random}")
    device = model_device(model)
    x = x.detach().to(device).clamp(0.0, 1.0)
    cap = float(max_dist) if max_dist is not None else max_distance(norm, x)
    if not cap > 0:
        raise ConfigError(f"max_dist must be > 0; got {max_dist}")
    labels = predict_proba(model, x, batch_size).argmax(1)
    gen = torch.Generator().manual_seed(seed)
    rand = random_directions((n_random, *x.shape), norm, gen).to(device)  # (R, N, ...)
    reps = x.repeat(n_random, *([1] * (x.dim() - 1)))
    d_rand, f_rand = distance_along(
        model, reps, rand.flatten(0, 1), labels.repeat(n_random), norm, cap,
        scan=scan, bisect=bisect, batch_size=batch_size,
    )  # fmt: skip
    result = BoundaryDistances(norm, cap, d_rand.view(n_random, -1).T, f_rand.view(n_random, -1).T)
    if gradients is None:
        gradients = has_input_gradients(model, x)
    if not gradients or len(x) == 0:
        return result
    u = adversarial_directions(model, x, labels, norm, method=direction, eps=eps, steps=steps, seed=seed)
    has_dir = _norms(u, norm) > 0
    d_adv, f_adv = distance_along(
        model, x, u, labels, norm, cap, scan=scan, bisect=bisect, batch_size=batch_size
    )
    f_adv &= has_dir
    d_adv = torch.where(has_dir, d_adv, torch.full_like(d_adv, cap))
    result.dist_adv, result.found_adv = d_adv, f_adv
    # curvature in the plane of u and a random orthogonal direction, from a second difference
    v = orthogonal_to(rand[0], u, norm)
    half = _expand(d_adv / 2, x)
    sides = torch.cat([(x + half * v).clamp(0, 1), (x - half * v).clamp(0, 1)])
    same = predict_proba(model, sides, batch_size).argmax(1) == labels.repeat(2)
    d_side, f_side = distance_along(
        model, sides, u.repeat(2, *([1] * (x.dim() - 1))), labels.repeat(2), norm, cap,
        scan=scan, bisect=bisect, batch_size=batch_size,
    )  # fmt: skip
    n = len(x)
    ok = f_adv & (d_adv > 0) & same[:n] & same[n:] & f_side[:n] & f_side[n:]
    kappa = 4 * (d_side[:n] + d_side[n:] - 2 * d_adv) / d_adv.clamp_min(1e-12)
    result.curvature = torch.where(ok, kappa, torch.full_like(kappa, float("nan")))
    return result


# -- the pictures ----------------------------------------------------------------------------------
@dataclass
class PcaPlane:
    """The plane of the first two principal components of some images, and a grid on it."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (2, D), orthonormal
    coords: torch.Tensor  # (N, 2) the images in the plane
    extent: tuple[float, float, float, float]  # x0, x1, y0, y1
    resolution: int
    shape: tuple[int, ...]  # one image's (C, H, W)

    @classmethod
    def fit(cls, x: torch.Tensor, resolution: int = 60, margin: float = 0.1) -> PcaPlane:
        if len(x) < 3:
            raise ConfigError(f"the PCA plane needs at least 3 images; got {len(x)}")
        flat = x.detach().flatten(1).double().cpu()
        mean = flat.mean(0)
        _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        comps = vh[:2]
        # a fixed orientation: the largest entry of each component positive (SVD signs are arbitrary)
        signs = comps.gather(1, comps.abs().argmax(1, keepdim=True)).sign()
        comps = comps * signs
        coords = (flat - mean) @ comps.T
        lo, hi = coords.min(0).values, coords.max(0).values
        pad = (hi - lo) * margin
        lo, hi = lo - pad, hi + pad
        extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        return cls(mean.float(), comps.float(), coords.float(), extent, resolution, tuple(x.shape[1:]))

    def grid(self) -> torch.Tensor:
        """(resolution**2, C, H, W) images of the grid, row-major from the bottom-left, in [0, 1]."""
        x0, x1, y0, y1 = self.extent
        a = torch.linspace(x0, x1, self.resolution)
        b = torch.linspace(y0, y1, self.resolution)
        bb, aa = torch.meshgrid(b, a, indexing="ij")
        z = torch.stack([aa.flatten(), bb.flatten()], 1)
        return (self.mean + z @ self.components).clamp(0.0, 1.0).view(-1, *self.shape)


@dataclass
class Map:
    """Predicted class and confidence on a square grid (rows: second axis, bottom first)."""

    pred: np.ndarray  # (G, G) int
    conf: np.ndarray  # (G, G) float

    def changes(self) -> float:
        """Share of neighbouring grid cells (horizontal and vertical) with different predictions:
        0 for one region, larger for fragmented, jagged boundaries."""
        h = (self.pred[:, 1:] != self.pred[:, :-1]).mean()
        v = (self.pred[1:, :] != self.pred[:-1, :]).mean()
        return float((h + v) / 2)


def predict_map(model: nn.Module, images: torch.Tensor, resolution: int, batch_size: int = 512) -> Map:
    probs = predict_proba(model, images.to(model_device(model)), batch_size).cpu()
    conf, pred = probs.max(1)
    return Map(pred.view(resolution, resolution).numpy(), conf.view(resolution, resolution).numpy())


def pca_plane(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    resolution: int = 60,
    batch_size: int = 512,
    n_points: int = 300,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
):
    """Paper 002's figure for each model (same plane, extent and colours) and its numbers.

    Returns (figure, {model name: {"pca_changes": ..., "pca_confidence": ...}}).
    """
    from robustcompress.analysis.figures import class_legend, fit_suptitle, new_figure, shaded

    plane = PcaPlane.fit(x, resolution)
    grid = plane.grid()
    k = num_classes or int(y.max()) + 1
    maps = {name: predict_map(m, grid, resolution, batch_size) for name, m in models.items()}
    k = max([k] + [int(mp.pred.max()) + 1 for mp in maps.values()])
    fig, axes = new_figure(1, len(models), panel=4.0)
    shown = plane.coords[:n_points].numpy()
    labels = y[: len(shown)].cpu().numpy()
    from robustcompress.analysis.figures import class_colors

    colors = class_colors(k)
    classes: list[int] = []
    numbers = {}
    for ax, (name, mp) in zip(axes[0], maps.items()):
        ax.imshow(shaded(mp.pred, mp.conf, k), origin="lower", extent=plane.extent, aspect="auto")
        ax.scatter(shown[:, 0], shown[:, 1], c=colors[labels], s=8, edgecolors="black", linewidths=0.3)
        numbers[name] = {"pca_changes": mp.changes(), "pca_confidence": float(mp.conf.mean())}
        ax.set_title(f"{name}\nboundary changes {numbers[name]['pca_changes']:.3f}", fontsize="medium")
        ax.set_xlabel("principal component 1 (pixel units)")
        ax.set_ylabel("principal component 2 (pixel units)")
        classes += np.unique(mp.pred).tolist()
    class_legend(axes[0][-1], classes, list(class_names) if class_names else None, k, loc="upper left",
                 bbox_to_anchor=(1.02, 1.0))  # fmt: skip
    title = (
        "Predicted class on the plane of the first two principal components of the test images\n"
        "(darker: more confident; dots: test images in their true class's colour)"
    )
    fit_suptitle(fig, title)
    return fig, numbers


def cross_sections(
    models: dict[str, nn.Module],
    x: torch.Tensor,
    *,
    norm: Norm = "linf",
    eps: float = 0.1,
    extent: float | None = None,
    resolution: int = 41,
    direction: Literal["gradient", "pgd"] = "pgd",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 512,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int = 10,
    gradients: dict[str, bool] | None = None,
):
    """Fawzi et al.'s cross-sections: rows are images, columns models, the eps-ball drawn in black.

    Each panel is the plane x + a u + b v (clipped to [0, 1]) with u the model's own adversarial
    direction (a random one where it has no input gradients) and v a random direction orthogonal
    to u, the same random draw for every model; a and b run over [-extent, extent] (default 4 eps).
    """
    from robustcompress.analysis.figures import class_legend, fit_suptitle, new_figure, shaded

    T = float(extent) if extent is not None else 4 * eps
    if not T > 0:
        raise ConfigError(f"the cross-section extent must be > 0; got {extent}")
    gen = torch.Generator().manual_seed(seed + 1)
    base_u = random_directions(tuple(x.shape), norm, gen)
    base_v = random_directions(tuple(x.shape), norm, gen)
    a = torch.linspace(-T, T, resolution)
    bb, aa = torch.meshgrid(a, a, indexing="ij")
    aa, bb = aa.flatten(), bb.flatten()
    fig, axes = new_figure(len(x), len(models), panel=3.2)
    classes: list[int] = []
    for col, (name, model) in enumerate(models.items()):
        dev = model_device(model)
        xs = x.to(dev)
        grad_ok = (gradients or {}).get(name)
        if grad_ok is None:
            grad_ok = has_input_gradients(model, xs)
        labels = predict_proba(model, xs, batch_size).argmax(1)
        u = base_u.to(dev)
        if grad_ok:
            adv = adversarial_directions(
                model, xs, labels, norm, method=direction, eps=eps, steps=steps, seed=seed
            )
            u = torch.where(_expand(_norms(adv, norm) > 0, xs), adv, u)
        v = orthogonal_to(base_v.to(dev), u, norm)
        for row in range(len(x)):
            pts = (xs[row] + _expand(aa.to(dev), u[:1]) * u[row] + _expand(bb.to(dev), v[:1]) * v[row]).clamp(
                0, 1
            )
            mp = predict_map(model, pts, resolution, batch_size)
            delta = _norms(pts - xs[row], norm).view(resolution, resolution).cpu().numpy()
            ax = axes[row][col]
            ax.imshow(shaded(mp.pred, mp.conf, num_classes), origin="lower", extent=(-T, T, -T, T))
            ax.contour(a.numpy(), a.numpy(), delta, levels=[eps], colors="black", linewidths=1.0)
            ax.plot([0], [0], marker="o", color="black", markersize=4)
            head = titles[row] if titles else f"image {row}"
            ax.set_title(f"{name}: {head}", fontsize="small")
            ax.set_xlabel(("adversarial" if grad_ok else "random") + f" direction ({norm} distance)")
            ax.set_ylabel(f"random orthogonal direction ({norm})")
            classes += np.unique(mp.pred).tolist()
    class_legend(axes[0][-1], classes, list(class_names) if class_names else None, num_classes,
                 loc="upper left", bbox_to_anchor=(1.02, 1.0))  # fmt: skip
    fit_suptitle(fig, f"Cross-sections through test images (black dot: the image; black line: the {norm} "
                      f"ball of radius {eps:g})")  # fmt: skip
    return fig
