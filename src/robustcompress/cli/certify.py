"""`robustcompress certify CKPT`: randomized-smoothing certificates or semantic PCA of a checkpoint."""

from __future__ import annotations

from typing import Any

import click

from robustcompress.cli.common import (
    FRACTION,
    checkpoint_test_split,
    common_options,
    data_options,
    log,
    print_json,
    split_list,
    user_errors,
)


def _floats(text: str | None, what: str) -> list[float] | None:
    from robustcompress.errors import ConfigError

    if text is None:
        return None
    try:
        return [float(t) for t in split_list(text)]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated numbers like 0,0.25,0.5; got {text!r}") from None


EXAMPLES = """
\b
Examples:
  robustcompress certify runs/cnn8 --sigma 0.25 --n 1000 --radii 0,0.25,0.5 --n-examples 100 --json
  robustcompress certify runs/cnn8-int8 --sigma 0.12,0.25 --n 10000 --per-example cert.tsv
  robustcompress certify runs/cnn8 --transforms rotation,brightness --eps 0.05 --n 200
"""


@click.command(epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option(
    "--sigma", default=None, help="Noise level(s) in [0, 1] pixels, comma-separated (default 0.25)."
)
@click.option(
    "--n", "n", type=int, default=None, help="Samples per input (default 100,000; 1,000 with --transforms)."
)
@click.option("--n0", type=int, default=100, show_default=True, help="Selection samples (smoothing).")
@click.option("--alpha", type=FRACTION, default=0.001, show_default=True, help="Failure probability.")
@click.option(
    "--radii", default=None, help="L2 radii of the certified-accuracy figures (default 0,0.25,0.5,0.75,1)."
)
@click.option(
    "--transforms",
    default=None,
    help="Semantic PCA instead of smoothing: comma-separated families, each measured on its own "
    "(rotation, translation, scaling, brightness, contrast, gaussian_blur, corruption:NAME:SEVERITY, "
    "identity; join with + to compose, e.g. rotation:30+brightness).",
)
@click.option(
    "--eps", type=FRACTION, default=0.05, show_default=True, help="PCA: certified when P(correct) >= 1 - eps."
)
@click.option("--n-examples", type=int, default=100, show_default=True, help="Test inputs, spread evenly.")
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Samples per forward pass.")
@click.option(
    "--per-example",
    type=click.Path(dir_okay=False),
    default=None,
    help="TSV with one row per input, written as it goes; a rerun resumes from it.",
)
@common_options
@user_errors
def certify(
    checkpoint,
    data,
    sigma,
    n,
    n0,
    alpha,
    radii,
    transforms,
    eps,
    n_examples,
    batch_size,
    per_example,
    seed,
    device,
    as_json,
):
    """Certify a checkpoint: L2 certified accuracy by randomized smoothing (Cohen et al. 2019), or
    probabilistically certified accuracy under semantic transformations (--transforms).

    Example: robustcompress certify runs/x/model --sigma 0.25 --n 1000 --radii 0,0.25,0.5 --n-examples 100
    """
    from robustcompress.checkpoint import load_checkpoint
    from robustcompress.device import resolve_device
    from robustcompress.errors import CheckpointError, ConfigError
    from robustcompress.evaluation.certified import CertifiedConfig, run_certified

    entry: dict[str, Any] = {
        "method": "semantic" if transforms else "smoothing",
        "n0": n0,
        "alpha": alpha,
        "eps": eps,
        "n_examples": n_examples,
        "batch_size": batch_size,
        "seed": seed,
    }
    if sigma is not None:
        if transforms:
            raise ConfigError("--sigma is for randomized smoothing; leave it out with --transforms")
        entry["sigma"] = _floats(sigma, "sigma")
    if n is not None:
        entry["n"] = n
    if radii is not None:
        entry["radii"] = _floats(radii, "radii")
    if transforms:
        entry["transforms"] = split_list(transforms)
    cfg = CertifiedConfig.parse(entry, "certify")
    cfg.validate_all()
    model, meta = load_checkpoint(checkpoint)
    made_for = meta.get("data", {}).get("dataset")
    asked = data.dataset
    if asked and made_for and asked != made_for:
        raise CheckpointError(
            f"{checkpoint} was trained on {made_for!r}, not {asked!r}: its certificates would describe "
            f"another distribution; use --dataset {made_for} (or leave --dataset out)"
        )
    splits = checkpoint_test_split(checkpoint, meta, data, seed=seed)
    metrics = run_certified(model, splits.test, cfg, resolve_device(device), per_example=per_example, log=log)
    if as_json:
        print_json(metrics)
    else:
        _table(metrics, cfg)


def _table(metrics: dict[str, Any], cfg) -> None:
    """The certified-accuracy table, its parameters (n, n0, alpha, radius cap) stated above it."""
    if cfg.method == "smoothing":
        click.echo(
            f"randomized smoothing: n = {cfg.samples}, n0 = {cfg.n0}, alpha = {cfg.alpha:g}, "
            f"{metrics['cert.smooth.n_examples']} inputs"
        )
        head = ["sigma", "radius cap"] + [f"r={r:g}" for r in cfg.radii] + ["acc", "abstain", "s/input"]
        rows = []
        for s in cfg.sigmas:
            p = f"cert.smooth.s{s:g}"
            rows.append(
                [f"{s:g}", f"{metrics[p + '.radius_cap']:.3f}"]
                + [f"{metrics[f'{p}.r{r:g}']:.3f}" for r in cfg.radii]
                + [
                    f"{metrics[p + '.acc']:.3f}",
                    f"{metrics[p + '.abstain']:.3f}",
                    f"{metrics[p + '.seconds']:.3f}",
                ]
            )
    else:
        from robustcompress.certification.semantic import min_samples
        from robustcompress.certification.transforms import make_family

        click.echo(
            f"probabilistic certification: n = {cfg.samples}, eps = {cfg.eps:g}, alpha = {cfg.alpha:g}, "
            f"{metrics['cert.pca.n_examples']} inputs "
            f"(zero failures need n >= {min_samples(cfg.eps, cfg.alpha)})"
        )
        head = ["family", "PCA", "acc under T", "s/input", "distribution"]
        rows = []
        for spec in cfg.transforms:
            fam = make_family(spec)
            p = f"cert.pca.{fam.name}"
            rows.append(
                [
                    fam.name,
                    f"{metrics[p]:.3f}",
                    f"{metrics[p + '.acc']:.3f}",
                    f"{metrics[p + '.seconds']:.3f}",
                    fam.describe(),
                ]
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))


COMMANDS = [certify]
