"""`finetune`: more training of a checkpoint (e.g. adversarial fine-tuning of a compressed model).

It goes through the pipeline's `finetune` stage, so the checkpoint's compression structure stays:
pruning masks keep their zeros, clustered layers keep their centroids' count, fake quantizers stay.
"""

from __future__ import annotations

from pathlib import Path

import click

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
from robustcompress.errors import ConfigError
from robustcompress.training import OBJECTIVES, TrainConfig

EXAMPLES = """
\b
Examples:
  robustcompress finetune runs/cnn8-half --objective pgd --objective-param eps=0.1 --epochs 3 \\
      --out runs/cnn8-half-at
  robustcompress finetune runs/cnn8-pcqat --objective trades --objective-param beta=6 --epochs 2 \\
      --lr 1e-4 --optimizer adam --out runs/cnn8-pcqat-trades --json
  robustcompress finetune runs/imported/net --epochs 30 --patience 5 --out runs/imported/net-ft
"""


@click.command(epilog=EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@objective_options(
    f"Training objective: {listing(OBJECTIVES.names())} (docs/attacks.md for the adversarial ones).",
    "eps=8/255 or steps=7",
)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Learning rate (default: a tenth of the checkpoint's training lr).",
)  # fmt: skip
@click.option(
    "--optimizer",
    type=click.Choice(literal_choices(TrainConfig, "optimizer")),
    default=None,
    help="Optimizer (default: the checkpoint's training optimizer).",
)
@click.option(
    "--schedule",
    type=click.Choice(literal_choices(TrainConfig, "schedule")),
    default=None,
    help="Learning-rate schedule (default: the checkpoint's).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: the checkpoint's.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=None)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many epochs without a better validation accuracy and keep the best epoch's "
    "weights (default: every epoch runs, the best is kept).",
)
@click.option(
    "--max-steps-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on optimizer steps per epoch (quick checks).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), required=True, help="Folder for the fine-tuned checkpoint."
)
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@data_options
@common_options
@user_errors
def finetune(
    checkpoint,
    objective,
    objective_params,
    epochs,
    lr,
    optimizer,
    schedule,
    batch_size,
    momentum,
    weight_decay,
    patience,
    max_steps_per_epoch,
    out,
    overwrite,
    data,
    seed,
    device,
    as_json,
):
    """Fine-tune CHECKPOINT with any objective; its compression structure stays as it is.

    Pruning masks keep their zeros, clustered layers their shared values, fake-quantized layers
    their quantizers. Prints clean accuracy before and after.
    """
    from robustcompress.api import apply_measured
    from robustcompress.checkpoint import save_checkpoint
    from robustcompress.device import resolve_device
    from robustcompress.experiments.pipeline import parse_stages
    from robustcompress.stages import StageContext
    from robustcompress.training.distributed import is_main_process

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another --out or pass --overwrite to replace it")
    stage = {"type": "finetune", "epochs": epochs, "objective": objective}
    stage["objective_params"] = parse_params(objective_params)
    optional = {
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "batch_size": batch_size,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "patience": patience,
        "max_steps_per_epoch": max_steps_per_epoch,
    }
    stage.update({k: v for k, v in optional.items() if v is not None})
    stages = parse_stages([stage], where="finetune")
    model, meta, dataset, splits, train_cfg = training_inputs(checkpoint, data, seed=seed)
    ctx = StageContext(
        data=splits, device=resolve_device(device), seed=seed, train=train_cfg, workdir=out.parent, log=log
    )
    steps, before, after = apply_measured(model, stages, ctx)
    tuned = steps[-1].model
    metrics = {"acc.clean.before": before, "acc.clean": after}
    if not is_main_process():
        return  # under torchrun, rank 0 alone writes and prints
    save_checkpoint(
        out,
        tuned.cpu(),
        {
            "data": data.meta(dataset),
            "recipe": [*meta.get("recipe", []), stage],
            "finetune": stage,
            "metrics": metrics,
            "training": meta.get("training", {}),
            "parent": str(checkpoint),
        },
    )
    if as_json:
        print_json({**metrics, "checkpoint": str(out)})
    else:
        click.echo(f"accuracy {before:.4f} -> {after:.4f}; fine-tuned checkpoint: {out}")


COMMANDS = [finetune]
