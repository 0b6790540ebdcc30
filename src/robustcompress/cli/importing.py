"""`robustcompress import`: your trained weights in, a checkpoint that every other command takes out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from robustcompress.cli.common import common_options, data_options, listing, log, print_json, user_errors
from robustcompress.errors import ConfigError
from robustcompress.models import MODELS

EXAMPLES = """\b
Examples:
  robustcompress import --model mypkg.nets:small_resnet --weights net.pth \\
      --dataset fashion-mnist --out runs/imported/net
  robustcompress import --model cnn8 --weights cnn8.safetensors --dataset cifar10 \\
      --normalize 0.4914,0.4822,0.4465,0.2470,0.2435,0.2616 --out runs/imported/cnn8
  robustcompress import --model resnet50 --stem imagenet --weights resnet50-0676ba61.pth \\
      --dataset cifar10 --normalize 0.485,0.456,0.406,0.229,0.224,0.225 --num-classes 10 \\
      --out runs/imported/resnet50
"""


@click.command("import", epilog=EXAMPLES)
@click.option(
    "--model",
    "model_name",
    required=True,
    help=f"Zoo model ({listing(MODELS.names())}) or your own as package.module:factory.",
)
@click.option(
    "--weights",
    type=click.Path(),
    required=True,
    help="The trained weights: .safetensors, or a state dict saved with torch.save (never a pickled model).",
)
@click.option(
    "--normalize",
    default="none",
    show_default=True,
    metavar="none|dataset|MEAN,STD",
    help="What the network was trained on: none ([0, 1] pixels), dataset (its mean and std), or "
    "per-channel numbers, the C means then the C standard deviations.",
)
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    default=None,
    help="Replace the classifier head when the weights have another class count (transfer learning).",
)
@click.option(
    "--stem",
    type=click.Choice(["cifar", "imagenet"]),
    default=None,
    help="Zoo layout: imagenet for torchvision's ImageNet weights (resnet, vgg, mobilenetv2).",
)
@click.option("--width", type=float, default=1.0, show_default=True, help="Zoo width multiplier.")
@data_options
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Checkpoint folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint at --out.")
@common_options
@user_errors
def import_(
    model_name,
    weights,
    normalize,
    num_classes,
    stem,
    width,
    data,
    out,
    overwrite,
    seed,
    device,
    as_json,
):
    """Import trained weights into a checkpoint and report its clean accuracy on the test split.

    The checkpoint takes images in [0, 1]; --normalize adds the normalisation the network was trained
    with as its first layer. Prefixes of DataParallel/DDP (module.) and Lightning (model.) and
    torchvision's names are understood. Nothing is written at --out unless the import succeeds.
    """
    from robustcompress.checkpoint import save_checkpoint
    from robustcompress.device import resolve_device
    from robustcompress.evaluation import accuracy
    from robustcompress.models.importing import import_with_report

    if not data.dataset:
        raise ConfigError(
            "give --dataset, the data the network was trained for (e.g. fashion-mnist, cifar10)"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another --out or pass --overwrite to replace it")
    splits = data.load_test(seed=seed)
    model, report = import_with_report(
        model_name,
        splits,
        weights,
        normalize=normalize,
        num_classes=num_classes,
        stem=stem,
        width=width,
        seed=seed,
    )
    for prefix in report.stripped:
        log(f"weights: stripped the prefix {prefix!r} from every name")
    if report.torchvision_names:
        log("weights: read torchvision's names")
    if report.replaced:
        log(f"weights: replaced the classifier head (new, seed {seed}): {', '.join(report.replaced)}")
    acc = accuracy(model.to(resolve_device(device)), splits.test)
    metrics = {"acc.clean": acc}
    meta = {
        "data": data.meta(data.dataset, limit_train=None),
        "metrics": metrics,
        "import": {
            "weights": str(weights),
            "sha256": _sha256(Path(weights)),
            "normalize": normalize,
            "stripped": report.stripped,
            "torchvision_names": report.torchvision_names,
            "replaced": report.replaced,
            "seed": seed,
        },
    }
    save_checkpoint(out, model.cpu(), meta)
    if as_json:
        print_json({**metrics, "checkpoint": str(out), "replaced": report.replaced})
    else:
        click.echo(f"acc.clean  {acc:.4f}")
    log(f"checkpoint: {out}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


COMMANDS = [import_]
