"""`report`: tables, Pareto front, plots and a self-contained HTML file from a run's results."""

from __future__ import annotations

import click

from robustcompress.cli.common import split_list, user_errors

EXAMPLES = """
\b
Examples:
  robustcompress report runs/demo
  robustcompress report runs/demo --markdown --columns acc.clean,mce,size.ratio
  robustcompress report runs/my-study --out my-study.html
"""


@click.command(epilog=EXAMPLES)
@click.argument("output_folder", type=click.Path())
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="HTML file to write (default: OUTPUT_FOLDER/report.html).",
)
@click.option(
    "--markdown", is_flag=True, help="Print the comparison table as Markdown (default: plain text)."
)
@click.option(
    "--columns",
    default=None,
    help="Comma-separated metrics or patterns to show, e.g. acc.clean,mce,size.ratio or 'acc.*'.",
)
@user_errors
def report(output_folder, out, markdown, columns):
    """Write the HTML report of a `robustcompress run` output folder and print its comparison table."""
    from robustcompress.report import comparison_table, load_results, write_report

    cols = split_list(columns) if columns else None
    results = load_results(output_folder)
    table = comparison_table(results, cols)  # validates --columns before anything is written
    click.echo(table.markdown() if markdown else table.text())
    path = write_report(output_folder, out, columns=cols, log=lambda msg: click.echo(msg, err=True))
    click.echo(f"report: {path}", err=True)


COMMANDS = [report]
