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
@click.option(
    "--objectives",
    default=None,
    help="Comma-separated Pareto objectives METRIC[:max|min] (default acc.clean,mce,size.ratio; the "
    "direction defaults to the metric's declared one), e.g. acc.clean,acc.worst_linf_0.1,size.ratio.",
)
@click.option(
    "--include-flagged",
    is_flag=True,
    help="Let figures that carry a gradient-masking flag compete on Pareto fronts and for 'best' "
    "(they stay marked).",
)
@user_errors
def report(output_folder, out, markdown, columns, objectives, include_flagged):
    """Write the HTML report of a `robustcompress run` output folder and print its comparison table."""
    from robustcompress.report import DEFAULT_OBJECTIVES, comparison_table, load_results, write_report

    cols = split_list(columns) if columns else None
    goals = parse_objectives(objectives) if objectives else DEFAULT_OBJECTIVES
    results = load_results(output_folder)
    # validates --columns before anything is written
    table = comparison_table(results, cols, objectives=goals, include_flagged=include_flagged)
    click.echo(table.markdown() if markdown else table.text())
    path = write_report(
        output_folder,
        out,
        columns=cols,
        objectives=goals,
        include_flagged=include_flagged,
        log=lambda msg: click.echo(msg, err=True),
    )
    click.echo(f"report: {path}", err=True)


def parse_objectives(text: str) -> list[tuple[str, str]]:
    """'acc.clean,mce:min' -> [("acc.clean", "max"), ("mce", "min")]; directions default to the spec's."""
    from robustcompress.errors import ConfigError
    from robustcompress.report.metrics import better

    out = []
    for item in split_list(text):
        metric, _, direction = item.partition(":")
        direction = direction or better(metric) or ""
        if direction not in ("max", "min"):
            raise ConfigError(
                f"objective {item!r}: say max or min (e.g. {metric}:max); the metric declares no direction"
            )
        out.append((metric, direction))
    return out


COMMANDS = [report]
