"""`robustcompress analyze`: decision-boundary and t-SNE figures of a checkpoint (beside its parent)."""

from __future__ import annotations

from pathlib import Path

import click

from robustcompress.analysis import AnalysisConfig
from robustcompress.cli.common import (
    FRACTION,
    checkpoint_test_split,
    common_options,
    data_options,
    literal_choices,
    log,
    print_json,
    user_errors,
)


@click.command(
    epilog="""\b
Examples:
  robustcompress analyze runs/prune/ckpt --parent runs/train/cnn8-fashion-mnist-s0 --out figs
  robustcompress analyze ckpt --boundary --eps 8/255 --n-images 50 --json
  robustcompress analyze ckpt --tsne --tsne-class 8 --layers input,net.features.7 --out figs
"""
)
@click.argument("checkpoint", type=click.Path())
@click.option("--parent", type=click.Path(), default=None, help="Parent checkpoint, drawn beside the model.")
@click.option("--boundary", is_flag=True, help="Decision-boundary figures and distances.")
@click.option("--tsne", is_flag=True, help="t-SNE of features (neither flag: both).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/analysis",
    show_default=True,
    help="Figure folder.",
)
@data_options
@click.option(
    "--norm",
    type=click.Choice(literal_choices(AnalysisConfig, "norm")),
    default="linf",
    show_default=True,
)
@click.option("--eps", type=FRACTION, default=0.1, show_default=True, help="Attack radius (8/255 accepted).")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="PGD steps.")
@click.option(
    "--direction",
    type=click.Choice(literal_choices(AnalysisConfig, "direction")),
    default="pgd",
    show_default=True,
    help="Adversarial direction: the PGD perturbation or the gradient (sign for linf).",
)
@click.option("--n-images", type=click.IntRange(min=1), default=20, show_default=True,
              help="Test images whose boundary distances are measured.")  # fmt: skip
@click.option("--n-random", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random directions per image.")  # fmt: skip
@click.option("--n-sections", type=click.IntRange(min=0), default=3, show_default=True,
              help="Images drawn as cross-sections.")  # fmt: skip
@click.option("--pca-resolution", type=click.IntRange(min=5), default=60, show_default=True,
              help="Grid points per side of the PCA-plane map.")  # fmt: skip
@click.option("--section-resolution", type=click.IntRange(min=5), default=41, show_default=True,
              help="Grid points per side of a cross-section.")  # fmt: skip
@click.option("--tsne-class", type=click.IntRange(min=0), default=0, show_default=True,
              help="Class whose features are embedded.")  # fmt: skip
@click.option("--tsne-images", type=click.IntRange(min=4), default=100, show_default=True)
@click.option(
    "--layers", default=None, help="Comma-separated layers for t-SNE (input, output, module names)."
)
@common_options
@user_errors
def analyze(
    checkpoint, parent, boundary, tsne, out, data,
    norm, eps, steps, direction, n_images, n_random, n_sections, pca_resolution, section_resolution,
    tsne_class, tsne_images, layers,
    seed, device, as_json,
):  # fmt: skip
    """Draw decision boundaries and t-SNE of features for a checkpoint and print their numbers.

    Boundaries: paper 002's PCA-plane map and cross-sections along the adversarial and a random
    direction (Fawzi et al.), with the distance to the boundary along each. t-SNE: clean and PGD
    images of one class, layer by layer (paper 003). A model without input gradients (e.g. a real
    int8 model) gets the figures that need only predictions.
    """
    from robustcompress.analysis import analyze as run_analysis
    from robustcompress.checkpoint import load_checkpoint
    from robustcompress.cli.common import split_list
    from robustcompress.device import resolve_device

    if not boundary and not tsne:
        boundary = tsne = True
    cfg = AnalysisConfig.parse(
        {
            "boundary": boundary, "tsne": tsne, "norm": norm, "eps": eps, "steps": steps,
            "direction": direction, "n_images": n_images, "n_random": n_random, "n_sections": n_sections,
            "pca_resolution": pca_resolution, "section_resolution": section_resolution,
            "tsne_class": tsne_class, "tsne_images": tsne_images, "tsne_layers": split_list(layers) or None,
        },
        where="analyze",
    )  # fmt: skip
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=dev)
    splits = checkpoint_test_split(checkpoint, meta, data, seed=seed)
    name = Path(checkpoint).name or "model"
    models = {name: model}
    if parent:
        parent_name = Path(parent).name
        parent_name = f"{parent_name} (parent)" if parent_name != name else "parent"
        models = {parent_name: load_checkpoint(parent, device=dev)[0], **models}
    result = run_analysis(
        models, splits.test, cfg, out, seed=seed, class_names=list(splits.info.class_names or []) or None,
        log=log,
    )  # fmt: skip
    figures = {kind: str(path) for kind, path in result.figures.items()}
    if as_json:
        report = {"checkpoint": str(checkpoint), "metrics": result.metrics[name], "figures": figures}
        if parent:
            report["parent"] = {"checkpoint": str(parent), "metrics": result.metrics[parent_name]}
        if result.notes:
            report["notes"] = result.notes
        print_json(report)
        return
    for label, metrics in result.metrics.items():
        click.echo(label)
        for k, v in metrics.items():
            click.echo(f"  {k:<45} {v:.4f}" if isinstance(v, float) else f"  {k:<45} {v}")
    for label, note in result.notes.items():
        click.echo(f"note ({label}): {note}", err=True)
    for kind, path in figures.items():
        click.echo(f"figure {kind}: {path}", err=True)


COMMANDS = [analyze]
