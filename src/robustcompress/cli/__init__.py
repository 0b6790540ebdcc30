"""The `robustcompress` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import importlib

import click

from robustcompress import __version__
from robustcompress.threads import ENV, configure_threads, parse_threads
from robustcompress.training.distributed import use_local_gpu

# Each area adds its commands in its own module; listed here so `--help` shows them all.
COMMAND_MODULES = [
    "robustcompress.cli.core",
    "robustcompress.cli.compress",
    "robustcompress.cli.report",
    "robustcompress.cli.corrupt",
    "robustcompress.cli.export",
    "robustcompress.cli.attack",
    "robustcompress.cli.importing",
    "robustcompress.cli.analyze",
    "robustcompress.cli.certify",
    "robustcompress.cli.finetune",
]


class ThreadsType(click.ParamType):
    name = "N"

    def convert(self, value, param, ctx):
        try:
            return parse_threads(value)
        except ValueError as exc:
            self.fail(f"{exc} (from --threads or ${ENV})", param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="robustcompress")
@click.option(
    "--threads",
    type=ThreadsType(),
    envvar=ENV,
    default=None,
    help=f"Intra-op CPU threads for every command (also ${ENV}). Default: the free cores among "
    "those this process may use, its share under torchrun; 1 when other work keeps the cores busy.",
)
def main(threads: int | None) -> None:
    """Compress CNNs (pruning, clustering, quantization), restore and measure their robustness.

    Images are read in [0, 1]; every model normalises inside its first layer. Progress goes to
    stderr; `--json` prints one JSON object on stdout. User errors exit with code 2.
    """
    configure_threads(threads)
    use_local_gpu()  # under torchrun: each rank on its own GPU


for _module in COMMAND_MODULES:
    for _cmd in importlib.import_module(_module).COMMANDS:
        main.add_command(_cmd)
