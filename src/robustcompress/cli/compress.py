"""`compress`: apply a compression recipe (a preset or explicit options) to a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustcompress.api import apply_measured, change_metrics
from robustcompress.checkpoint import save_checkpoint
from robustcompress.cli.common import (
    common_options,
    data_options,
    listing,
    literal_choices,
    log,
    objective_options,
    parse_params,
    print_json,
    training_inputs,
    user_errors,
)
from robustcompress.compression.presets import PRESETS
from robustcompress.device import resolve_device
from robustcompress.errors import ConfigError
from robustcompress.experiments.pipeline import parse_stages
from robustcompress.stages import STAGES, StageContext
from robustcompress.training.distributed import is_main_process


def recipe_from_options(
    preset: str | None,
    prune: str | None,
    amount: float | None,
    cluster: int | None,
    quantize: int | None,
    qat_epochs: int,
    int8: bool,
    finetune_epochs: int,
    objective: str,
    objective_params: dict[str, Any],
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """The ordered stage list the options describe: prune -> finetune -> cluster -> ptq|qat -> int8.

    With a preset, --epochs, --amount, --clusters and --bits change the preset's training budget
    and strengths (compression.presets.preset_stages) instead of adding stages.
    """
    if preset:
        if prune or int8 or qat_epochs:
            raise ConfigError(
                "--prune, --int8 and --qat-epochs describe your own recipe; with --preset change the preset "
                "with --epochs, --amount, --clusters and --bits, or drop --preset"
            )
        overrides = {"epochs": epochs, "amount": amount, "clusters": cluster, "bits": quantize}
        _check_preset_overrides(preset, {k: v for k, v in overrides.items() if v is not None})
    elif epochs is not None:
        raise ConfigError(
            "--epochs sets a preset's training budget; without --preset use --finetune-epochs "
            "and --qat-epochs"
        )
    explicit = prune or cluster or quantize or int8
    finetune = {
        "type": "finetune",
        "epochs": finetune_epochs,
        "objective": objective,
        "objective_params": objective_params,
    }
    if preset:
        entry = {"type": "preset", "name": preset, **{k: v for k, v in overrides.items() if v is not None}}
        stages: list[dict[str, Any]] = [entry]
        return stages + ([finetune] if finetune_epochs else [])
    if not explicit and not finetune_epochs:
        raise ConfigError(
            "nothing to do: give --preset NAME or at least one of --prune, --cluster, --quantize, --int8"
        )
    stages = []
    if prune:
        if amount is None:
            raise ConfigError(
                "--prune needs --amount (the fraction of weights or channels to remove, e.g. 0.5)"
            )
        stages.append({"type": "prune", "method": prune, "amount": amount})
    if finetune_epochs:
        stages.append(finetune)
    if cluster:
        stages.append({"type": "cluster", "clusters": cluster})
    if quantize:
        stages.append(
            {"type": "qat", "bits": quantize, "epochs": qat_epochs}
            if qat_epochs
            else {"type": "ptq", "bits": quantize}
        )
    if int8:
        stages.append({"type": "int8"})
    return stages


def _check_preset_overrides(name: str, overrides: dict[str, Any]) -> None:
    """Refuse an override that would change nothing in the preset (e.g. --clusters for qat)."""
    from robustcompress.compression.presets import PRESETS, preset_stages

    option = {"epochs": "--epochs", "amount": "--amount", "clusters": "--clusters", "bits": "--bits"}
    for key, value in overrides.items():
        if preset_stages(name, **{key: value}) == PRESETS[name]:
            raise ConfigError(
                f"preset {name!r} has nothing that {option[key]} changes "
                f"(its stages: {', '.join(s['type'] for s in PRESETS[name])})"
            )


EXAMPLES = """
\b
Examples:
  robustcompress compress runs/train/cnn8-fashion-mnist-s0 --preset pcqat-int8 --epochs 1 --json \\
      --out runs/cnn8-pcqat
  robustcompress compress CKPT --prune channel --amount 0.5 --finetune-epochs 2 --out runs/cnn8-half
  robustcompress compress CKPT --cluster 16 --quantize 8 --qat-epochs 1 --int8 --out runs/cnn8-int8
"""


@click.command(epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    metavar="NAME",
    default=None,
    help=f"A named recipe of stages: {listing(sorted(PRESETS))} (docs/quantization.md, Presets).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=None,
    help="With --preset: every training budget of the preset (its default is paper 000's, up to 30 "
    "epochs per step).",
)
@click.option(
    "--prune",
    type=click.Choice(literal_choices(STAGES.get("prune").config_cls, "method")),
    default=None,
    help="Unstructured global / layer-wise magnitude pruning, or structured channel pruning.",
)
@click.option(
    "--amount",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Fraction of weights (or channels) to prune; with --preset, the preset's.",
)
@click.option(
    "--cluster",
    "--clusters",
    "cluster",
    type=click.IntRange(min=2),
    default=None,
    help="Share weights: N clusters per layer; with --preset, the preset's cluster count.",
)
@click.option(
    "--quantize",
    "--bits",
    "quantize",
    type=click.IntRange(1, 16),
    default=None,
    help="Quantize weights to BITS bits; with --preset, the preset's QAT/PTQ bit width.",
)
@click.option(
    "--qat-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Quantization-aware training epochs (0: post-training quantization).",
)
@click.option("--int8", is_flag=True, help="Convert to a real int8 CPU model at the end.")
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tuning epochs after pruning (or after the preset).",
)
@objective_options("Fine-tuning objective.", "eps=0.1")
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder for the compressed checkpoint."
)
@data_options
@common_options
@user_errors
def compress(
    checkpoint,
    preset,
    epochs,
    prune,
    amount,
    cluster,
    quantize,
    qat_epochs,
    int8,
    finetune_epochs,
    objective,
    objective_params,
    out,
    data,
    seed,
    device,
    as_json,
):
    """Compress a checkpoint, fine-tune if asked, save it and report what changed.

    Prints clean accuracy before and after; --json adds parameters, non-zero weights, MACs of one
    image and checkpoint bytes, each before (<name>.before) and after.
    """
    recipe = recipe_from_options(
        preset,
        prune,
        amount,
        cluster,
        quantize,
        qat_epochs,
        int8,
        finetune_epochs,
        objective,
        parse_params(objective_params),
        epochs,
    )
    stages = parse_stages(recipe)
    model, meta, dataset, splits, train_cfg = training_inputs(checkpoint, data, seed=seed)
    ctx = StageContext(
        data=splits, device=resolve_device(device), seed=seed, train=train_cfg, workdir=Path(out).parent,
        parent=model, log=log,
    )  # fmt: skip
    steps, before, after = apply_measured(model, stages, ctx)
    compressed = steps[-1].model if steps else model
    metrics = {"acc.clean.before": before, "acc.clean": after}
    metrics.update(change_metrics(model, [s.model for s in steps], splits.test.x))
    if not is_main_process():
        return  # under torchrun, rank 0 alone writes and prints
    save_checkpoint(
        out,
        compressed,
        {
            "data": data.meta(dataset),
            "recipe": recipe,
            "metrics": metrics,
            "training": meta.get("training", {}),
            "parent": str(checkpoint),
        },
    )
    if as_json:
        print_json(metrics)
    else:
        click.echo(
            f"accuracy {before:.4f} -> {after:.4f}; checkpoint bytes {metrics['size.bytes.before']} -> "
            f"{metrics['size.bytes']}; compressed checkpoint: {out}"
        )


COMMANDS = [compress]
