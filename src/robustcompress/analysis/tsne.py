"""t-SNE of features of clean and adversarial images of one class, layer by layer (paper 003, Fig. 2).

Features are read with forward hooks on named modules (default: the input and the last three main
blocks; for cnn8 the 6th convolutional block and the two linear layers, as the paper), flattened,
and embedded with scikit-learn's TSNE (perplexity 30 clipped below the number of points, learning
rate "auto", PCA initialisation, a fixed random_state). Each model is embedded on its own: two
models' feature spaces are not comparable, their pictures side by side are.

The number per layer, `other_class`: the share of points whose nearest neighbour in the layer's
feature space (Euclidean, before t-SNE) among clean reference images of every class belongs to
another class. For clean points it is the layer's 1-NN error on the class; for adversarial points
it shows at which depth the attack's misclassification registers: a standard model's features
move to other classes in late layers, a robust model's stay put. The embedding itself is for
looking at; distances in it are not measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from robustcompress.analysis.boundary import Norm, has_input_gradients
from robustcompress.attacks import eval_mode, make_attack
from robustcompress.device import model_device
from robustcompress.errors import ConfigError

INPUT, OUTPUT = "input", "output"  # pseudo-layers: the image itself and the model's output (logits)


def main_blocks(model: nn.Module) -> list[str]:
    """Names of the model's main blocks in forward order: the children of its top-level containers
    that hold weights (conv blocks, residual blocks, linear layers), normalisation excluded."""
    root = model.net if hasattr(model, "net") and isinstance(model.net, nn.Module) else model
    prefix = "net." if root is not model else ""
    names = []
    for name, child in root.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList):
            names += [f"{prefix}{name}.{n}" for n, m in child.named_children() if _has_weights(m)]
        elif _has_weights(child) and "norm" not in name:
            names.append(f"{prefix}{name}")
    return names


def _has_weights(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) and not isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)


def default_layers(model: nn.Module) -> list[str]:
    """The input and the last three main blocks (the output where the model has no named blocks)."""
    blocks = main_blocks(model)
    return [INPUT, *(blocks[-3:] if blocks else [OUTPUT])]


@torch.no_grad()
def layer_features(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str], batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """{layer: (N, F) flattened features on the CPU} from forward hooks on the named modules."""
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in (INPUT, OUTPUT) and name not in modules]
    if unknown:
        blocks = ", ".join(main_blocks(model)) or "none"
        raise ConfigError(
            f"layer(s) {', '.join(unknown)} not in the model; use input, output or module names "
            f"such as: {blocks}"
        )
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def hook_for(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple | list) else output
            captured[name].append(out.detach().flatten(1).float().cpu())

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in layers if n not in (INPUT, OUTPUT)]
    device = model_device(model)
    try:
        with eval_mode(model):
            for i in range(0, len(x), batch_size):
                batch = x[i : i + batch_size].to(device)
                out = model(batch)
                if INPUT in captured:
                    captured[INPUT].append(batch.flatten(1).float().cpu())
                if OUTPUT in captured:
                    captured[OUTPUT].append(out.detach().flatten(1).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


def other_class_share(features: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor, cls: int) -> float:
    """Share of rows whose nearest reference point (Euclidean) is of a class other than `cls`."""
    if len(features) == 0:
        return float("nan")
    nearest = torch.cdist(features.double(), ref.double()).argmin(1)
    return float((ref_labels[nearest] != cls).float().mean())


def embed(features: np.ndarray, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000) -> np.ndarray:
    """(N, 2) t-SNE embedding with paper 003's settings; perplexity clipped to (N - 1) / 3."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 4:
        raise ConfigError(f"t-SNE needs at least 4 points; got {n} (raise n_images)")
    if not np.ptp(features, axis=0).max() > 0:
        return np.zeros((n, 2))  # every point the same (a layer that ignores its input): nothing to embed
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, learning_rate="auto", init="pca",
        random_state=seed, max_iter=max(250, max_iter),
    )  # fmt: skip
    return tsne.fit_transform(features.astype(np.float64))


@dataclass
class ModelEmbedding:
    """One model's points: clean first, then adversarial (if any), per layer."""

    layers: list[str]
    points: dict[str, np.ndarray]  # layer -> (N_clean + N_adv, 2)
    n_clean: int
    fooled: np.ndarray  # (N_adv,) bool: the model misclassifies the adversarial image
    numbers: dict[str, float] = field(default_factory=dict)
    note: str = ""


def tsne_analysis(
    models: dict[str, nn.Module],
    data,
    cls: int,
    *,
    n_images: int = 100,
    n_reference: int = 20,
    layers: Sequence[str] | None = None,
    eps: float = 0.1,
    norm: Norm = "linf",
    steps: int = 20,
    seed: int = 0,
    perplexity: float = 30.0,
    max_iter: int = 1000,
    batch_size: int = 256,
    class_names: Sequence[str] | None = None,
    log=None,
):
    """t-SNE figure (rows: models, columns: layers) and the numbers of each model.

    data: an ImageData (the test split). Adversarial images come from PGD against each model; a
    model without input gradients gets the PGD images of the first model that has them (transfer),
    or none. Returns (figure, {model name: {metric: value}}, {model name: note}).
    """
    log = log or (lambda msg: None)
    for model in models.values():  # refuse unknown layer names before any slow work
        layer_features(model, data.x[:1], list(layers) if layers else default_layers(model))
    y_all = data.y
    num_classes = int(y_all.max()) + 1 if len(y_all) else 0
    if not 0 <= cls < max(num_classes, 1):
        raise ConfigError(f"t-SNE class {cls} is not a class of this dataset (0..{num_classes - 1})")
    idx = (y_all == cls).nonzero().squeeze(1)
    keep = min(n_reference, len(idx) // 2)  # images of the class left as its own clean references
    if len(idx) - keep < 4 or keep < 1:
        raise ConfigError(
            f"the test split has {len(idx)} images of class {cls}; t-SNE needs 8 or more (raise --limit-test)"
        )
    gen = torch.Generator().manual_seed(seed)
    chosen = idx[torch.randperm(len(idx), generator=gen)[: min(n_images, len(idx) - keep)]].sort().values
    rest = torch.ones(len(y_all), dtype=torch.bool)
    rest[chosen] = False
    ref_idx = torch.cat([
        (rest & (y_all == c)).nonzero().squeeze(1)[:n_reference] for c in range(num_classes)
    ])  # fmt: skip
    x, y = data.x[chosen], y_all[chosen]
    x_ref, y_ref = data.x[ref_idx], y_all[ref_idx]

    adversarial: dict[str, torch.Tensor | None] = {}
    notes: dict[str, str] = {}
    donor = None
    for name, model in models.items():
        if has_input_gradients(model, x[:1]):
            attack = make_attack("pgd", model, eps, norm=norm, steps=steps, seed=seed)
            with eval_mode(model):
                adversarial[name] = attack.generate(
                    x.to(model_device(model)), y.to(model_device(model))
                ).cpu()
            donor = donor or name
        else:
            adversarial[name] = None
    for name in models:
        if adversarial[name] is None:
            if donor is not None:
                adversarial[name] = adversarial[donor]
                notes[name] = f"no input gradients: adversarial images transferred from {donor}"
            else:
                notes[name] = "no input gradients and no model to transfer from: clean images only"
            log(f"t-SNE, {name}: {notes[name]}")

    results: dict[str, ModelEmbedding] = {}
    for name, model in models.items():
        names = list(layers) if layers else default_layers(model)
        adv = adversarial[name]
        feats = layer_features(model, x if adv is None else torch.cat([x, adv]), names, batch_size)
        ref = layer_features(model, x_ref, names, batch_size)
        n = len(x)
        fooled = np.zeros(0, dtype=bool)
        numbers: dict[str, float] = {"n_images": n, "class": cls}
        if adv is not None:
            with torch.no_grad(), eval_mode(model):
                pred = torch.cat([
                    model(adv[i : i + batch_size].to(model_device(model))).argmax(1).cpu()
                    for i in range(0, len(adv), batch_size)
                ])  # fmt: skip
            fooled = (pred != y).numpy()
            numbers["attack_success"] = float(fooled.mean())
        points = {}
        for layer in names:
            f = feats[layer]
            numbers[f"{layer}.clean_other_class"] = other_class_share(f[:n], ref[layer], y_ref, cls)
            if adv is not None:
                numbers[f"{layer}.adv_other_class"] = other_class_share(f[n:], ref[layer], y_ref, cls)
            log(f"t-SNE, {name}: {layer} ({f.shape[1]} features)")
            points[layer] = embed(f.numpy(), seed=seed, perplexity=perplexity, max_iter=max_iter)
        results[name] = ModelEmbedding(names, points, n, fooled, numbers, notes.get(name, ""))
    fig = _figure(results, cls, class_names, eps, norm)
    return fig, {name: r.numbers for name, r in results.items()}, notes


def _figure(results: dict[str, ModelEmbedding], cls: int, class_names, eps: float, norm: str):
    from robustcompress.analysis.figures import fit_suptitle, new_figure

    cols = max(len(r.layers) for r in results.values())
    fig, axes = new_figure(len(results), cols, panel=3.2)
    for row, (name, r) in enumerate(results.items()):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(r.layers):
                ax.axis("off")
                continue
            layer = r.layers[col]
            pts = r.points[layer]
            clean, adv = pts[: r.n_clean], pts[r.n_clean :]
            ax.scatter(clean[:, 0], clean[:, 1], s=10, c="tab:blue", marker="o", label="clean")
            if len(adv):
                ok = ~r.fooled
                ax.scatter(
                    adv[ok, 0], adv[ok, 1], s=14, c="tab:orange", marker="^", label="adversarial, still right"
                )
                ax.scatter(
                    adv[~ok, 0], adv[~ok, 1], s=14, c="tab:red", marker="x", label="adversarial, fooled"
                )
            other = r.numbers.get(f"{layer}.adv_other_class")
            sub = f"\nadv. nearest other class {other:.2f}" if other is not None else ""
            ax.set_title(f"{name}: {layer}{sub}", fontsize="small")
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].legend(fontsize="x-small", loc="best")
    label = class_names[cls] if class_names and cls < len(class_names) else f"class {cls}"
    fit_suptitle(
        fig, f"t-SNE of features of {label}: clean and PGD ({norm}, eps {eps:g}) images, layer by layer"
    )
    return fig
