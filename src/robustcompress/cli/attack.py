"""`robustcompress attack CKPT`: robust accuracy of a checkpoint under one attack (or a suite)."""

from __future__ import annotations

from typing import Any

import click

from robustcompress.cli.common import (
    FRACTION,
    attack_budget_options,
    attack_names,
    common_options,
    data_options,
    evaluation_config,
    listing,
    literal_choices,
    log,
    print_json,
    user_errors,
)

EXAMPLES = """
\b
Examples:
  robustcompress attack runs/x/model --attack pgd --eps 0.1 --steps 20 --step-size 0.01
  robustcompress attack CKPT --attack standard --eps 8/255 --n-examples 500 --json
  robustcompress attack CKPT --attack pgd --norm l2 --eps 0.25 --eps 0.5 --plot curve.png
"""


@click.command(epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option(
    "--attack",
    "attacks",
    default="pgd",
    show_default=True,
    help=f"Attack or attack suite ({listing(attack_names())}); comma-separated for several.",
)
@click.option(
    "--eps",
    type=FRACTION,
    multiple=True,
    required=True,
    help="Perturbation budget on [0, 1] pixels (L-inf in (0, 1], L2 > 0); fractions like 8/255; "
    "repeat for a curve.",
)
@attack_budget_options
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--estimator",
    type=click.Choice(literal_choices(evaluation_config("adversarial"), "estimator")),
    default="none",
    show_default=True,
    help="Gradients through rounding (ste), a named module (bpda), or a random model (eot).",
)
@click.option("--bpda-module", default=None, help="Dotted module name for --estimator bpda.")
@click.option("--eot-samples", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--transfer-from",
    type=click.Path(),
    default=None,
    help="Surrogate checkpoint: adds a transfer attack crafted on it (e.g. the uncompressed parent).",
)
@click.option(
    "--queries", type=click.IntRange(min=1), default=None, help="Square attack queries (default 5000)."
)
@click.option("--no-cascade", is_flag=True, help="Run every attack on every clean-correct image.")
@click.option("--no-sanity", is_flag=True, help="Skip the gradient-masking checks.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write an accuracy-vs-eps plot.")
@common_options
@user_errors
def attack(
    checkpoint,
    data,
    attacks,
    eps,
    budget,
    batch_size,
    estimator,
    bpda_module,
    eot_samples,
    transfer_from,
    queries,
    no_cascade,
    no_sanity,
    plot,
    seed,
    device,
    as_json,
):
    """Attack a checkpoint's test images; print clean and robust accuracy and any masking flags.

    Attacks and budgets are described in docs/attacks.md.
    """
    from robustcompress.cli.core import evaluate_checkpoint

    adv = budget.evaluation(
        attacks,
        eps,
        batch_size=batch_size,
        estimator=estimator,
        eot_samples=eot_samples,
        cascade=not no_cascade,
        sanity=not no_sanity,
        bpda_module=bpda_module,
        transfer_from="parent" if transfer_from else None,
    )
    if queries is not None:
        adv["attack_params"] = {"square": {"queries": queries}}
    metrics = evaluate_checkpoint(
        checkpoint,
        [{"type": "clean"}, adv],
        data=data,
        parent=transfer_from,
        seed=seed,
        device=device,
    )
    if plot:
        _plot(metrics, budget.norm, plot)
    if as_json:
        print_json(metrics)
        return
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        if not key.startswith("flag."):
            click.echo(
                f"{key.ljust(width)}  {value:.4f}"
                if isinstance(value, float)
                else f"{key.ljust(width)}  {value}"
            )
    for key, value in metrics.items():
        if key.startswith("flag."):
            click.echo(f"WARNING {key}: {value}", err=True)


def _plot(metrics: dict[str, Any], norm: str, path: str) -> None:
    from robustcompress.evaluation.adversarial import plot_accuracy_curves

    curves: dict[str, list[tuple[float, float]]] = {}
    prefix = "acc."
    for key, value in metrics.items():
        if not key.startswith(prefix) or f"_{norm}_" not in key:
            continue
        name, _, eps = key[len(prefix) :].rpartition(f"_{norm}_")
        curves.setdefault(name, []).append((float(eps), float(value)))
    clean = metrics.get("adv.clean_acc")
    for name in curves:
        if clean is not None:
            curves[name].append((0.0, float(clean)))
        curves[name] = sorted(set(curves[name]))
    log(f"plot: {plot_accuracy_curves(curves, path, norm=norm)}")


COMMANDS = [attack]
