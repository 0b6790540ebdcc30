"""`corrupt`: write a corrupted test set (CIFAR-10-C layout); `corruption-grid`: picture of a suite."""

from __future__ import annotations

import time

import click

from robustcompress.cli.common import (
    DataArgs,
    data_options,
    dataset_help,
    print_json,
    split_list,
    user_errors,
)
from robustcompress.corruptions import SUITES
from robustcompress.errors import ConfigError


def _split(text: str | None) -> list[str] | None:
    return split_list(text) if text else None


def _severities(text: str | None) -> list[int] | None:
    try:
        return [int(s) for s in _split(text)] if text else None
    except ValueError:
        raise ConfigError(f"--severities takes comma-separated integers like 1,3,5; got {text!r}") from None


def _test_images(data: DataArgs):
    if not data.dataset:
        raise ConfigError(f"give --dataset. {dataset_help()}")
    return data.load_test().test


CORRUPT_EXAMPLES = """
\b
Examples:
  robustcompress corrupt --dataset cifar10 --out data/cifar10-c --json
  robustcompress corrupt --dataset fashion-mnist --suite mnist-c --severities 3,5 --out data/fmnist-c
  robustcompress corrupt --dataset cifar10 --corruptions fog,frost --limit-test 100 --out c --grid c.png
"""
GRID_EXAMPLES = """
\b
Examples:
  robustcompress corruption-grid --dataset cifar10 --out grid.png
  robustcompress corruption-grid --dataset fashion-mnist --suite mnist-c --index 3 --out grid.png
"""


@click.command(epilog=CORRUPT_EXAMPLES)
@data_options
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write.")
@click.option("--suite", type=click.Choice(SUITES.names()), default="cifar-c", show_default=True)
@click.option(
    "--corruptions", default=None, help="Comma-separated names (default: the whole suite with extras)."
)
@click.option("--severities", default=None, help="Comma-separated severities (default: all of the suite's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option(
    "--frost-images",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Photos of frost to blend in (repeatable); default: a procedural frost texture.",
)
@click.option(
    "--grid",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a PNG of the first test image under every corruption and severity.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as one JSON object on stdout.")
@user_errors
def corrupt(
    data,
    out,
    suite,
    corruptions,
    severities,
    seed,
    frost_images,
    grid,
    as_json,
):
    """Write corrupted copies of a test set: <corruption>.npy (severities stacked), labels.npy, manifest.json.

    The layout is that of the released CIFAR-10-C, so `evaluate --corruptions ... ` with a source
    folder, or any CIFAR-10-C reader, can use it.
    """
    import json

    from robustcompress.corruptions import load_frost_images
    from robustcompress.corruptions.dataset import write_corrupted

    test = _test_images(data)
    frost = load_frost_images(list(frost_images)) if frost_images else None
    start = time.perf_counter()
    folder = write_corrupted(
        out,
        test.x,
        test.y,
        suite=suite,
        corruptions=_split(corruptions),
        severities=_severities(severities),
        seed=seed,
        dataset=data.dataset,
        frost_images=frost,
        progress=lambda m: click.echo(f"  {m}", err=True),
    )
    if grid:
        from robustcompress.corruptions.pictures import corruption_grid

        corruption_grid(
            test.x[0],
            grid,
            suite=suite,
            corruptions=_split(corruptions),
            severities=_severities(severities),
            seed=seed,
        )
    manifest = json.loads((folder / "manifest.json").read_text())
    click.echo(
        f"wrote {len(manifest['corruptions'])} corruptions x {len(manifest['severities'])} severities of "
        f"{manifest['n']} images to {folder} in {time.perf_counter() - start:.1f}s",
        err=True,
    )
    if as_json:
        manifest.pop("parameters", None)
        print_json(manifest)


@click.command("corruption-grid", epilog=GRID_EXAMPLES)
@data_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG file to write.")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Which test image.")
@click.option("--suite", type=click.Choice(SUITES.names()), default="cifar-c", show_default=True)
@click.option("--corruptions", default=None, help="Comma-separated names (default: the whole suite).")
@click.option("--severities", default=None, help="Comma-separated severities (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def corruption_grid_cmd(data, out, index, suite, corruptions, severities, seed):
    """Draw one test image under every corruption and severity of a suite (PNG)."""
    from robustcompress.corruptions.pictures import corruption_grid

    test = _test_images(data)
    if index >= len(test):
        raise ConfigError(f"--index {index} is past the {len(test)} test images")
    path = corruption_grid(
        test.x[index],
        out,
        suite=suite,
        corruptions=_split(corruptions),
        severities=_severities(severities),
        seed=seed,
    )
    click.echo(f"wrote {path}", err=True)


COMMANDS = [corrupt, corruption_grid_cmd]
