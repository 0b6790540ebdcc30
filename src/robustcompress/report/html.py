"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no external assets).

Order of the page: gradient-masking warnings first (a robust accuracy under a flag is not to be
trusted), then the comparison table, the Pareto front, the plots and each experiment's models
and config.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from robustcompress.experiments.store import results_path
from robustcompress.fileio import atomic_write_text
from robustcompress.report.pareto import DEFAULT_OBJECTIVES, Objective, pareto_front
from robustcompress.report.plots import make_plots
from robustcompress.report.results import Results, load_results
from robustcompress.report.tables import Table, comparison_table, measured_objectives

REPORT_NAME = "report.html"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; } tr.front td:first-child { font-weight: bold; }
.delta { color: #666; font-size: 0.85em; margin-left: 0.3em; white-space: nowrap; }
.good .delta { color: #1a7f37; } .bad .delta { color: #c62828; }
.flags { border: 2px solid #c62828; background: #fdecea; padding: 0.6em 1em; border-radius: 6px; }
.flags h2 { color: #c62828; border: none; margin-top: 0.2em; }
.ok { border: 1px solid #ccc; background: #f6f8fa; padding: 0.4em 1em; border-radius: 6px; }
.skipped { color: #8a6d3b; } .muted { color: #666; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } img { max-width: 100%; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def write_report(
    output_folder: str | Path,
    path: str | Path | None = None,
    *,
    columns: Sequence[str] | None = None,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the HTML report of a `robustcompress run` output folder; returns its path.

    `path` defaults to <output_folder>/report.html; it is written to a temporary name and renamed,
    so a reader never sees half a report. A folder without results.sqlite is a ConfigError.
    `log` hears about skipped plots and raised gradient-masking flags.
    """
    results = load_results(output_folder)
    target = Path(path) if path is not None else results_path(output_folder).parent / REPORT_NAME
    text = render_report(results, columns=columns, objectives=objectives, log=log)
    return atomic_write_text(target, text)


def render_report(
    results: Results,
    *,
    columns: Sequence[str] | None = None,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
    log: Callable[[str], None] | None = None,
) -> str:
    """The report as one HTML string."""
    e = html.escape
    log = log or (lambda msg: None)
    flags = sum(len(r.flags) for r in results.rows)
    if flags:
        log(f"warning: {flags} gradient-masking flag(s) raised; see the report's first section")
    rows = results.comparison_rows()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>robustcompress report: {e(str(results.folder))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>robustcompress report</h1>",
        f'<p class="muted">{e(str(results.folder))} &middot; {len(results.experiments)} experiment(s), '
        f"{len(results.rows)} evaluated model(s) &middot; generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
        _flags_section(results),
    ]
    if not rows:
        parts.append("<p>No results yet: the store holds no evaluated model.</p></body></html>")
        return "\n".join(parts)

    parts += [
        "<h2>Comparison</h2>",
        "<p>Each baseline once, then every experiment's final model; changes are against the "
        "experiment's own baseline (accuracies in percentage points, mCE in points, sizes, "
        "counts and latencies in %).</p>",
        table_html(comparison_table(results, columns, objectives=objectives)),
        _pareto_section(results, objectives),
        "<h2>Plots</h2>",
    ]
    for plot in make_plots(rows):
        if plot.png is None:
            log(f"plot '{plot.title}' {plot.skipped}")
            parts.append(f'<p class="skipped"><b>{e(plot.title)}</b>: {e(plot.skipped or "")}</p>')
        else:
            data = base64.b64encode(plot.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{e(plot.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(plot.title)}</figcaption></figure>"
            )
    parts.append("<h2>Experiments</h2>")
    for name in results.experiments:
        models = results.models_of(name)
        config = results.configs.get(name)
        parts += [
            f"<h3>{e(name)}</h3>",
            f"<p>recipe: {e(recipe_summary(config))}</p>" if config is not None else "",
            table_html(comparison_table(results, columns, rows=models, objectives=(), strict=False)),
            "<details><summary>config</summary><pre>"
            + e(
                json.dumps(config, indent=2, sort_keys=True) if config is not None else "(not stored)",
                quote=False,
            )
            + "</pre></details>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def recipe_summary(config: dict) -> str:
    """'prune(amount=0.5, method=global) -> finetune(epochs=1)' from a stored experiment config."""
    stages = config.get("stages") or []
    if not stages:
        return "baseline only (no stages)"
    steps = []
    for stage in stages:
        params = ", ".join(f"{k}={v}" for k, v in sorted(stage.items()) if k != "type")
        steps.append(f"{stage.get('type', '?')}({params})")
    return " -> ".join(steps)


def table_html(table: Table) -> str:
    """A Table as an HTML table; changes coloured green (better) or red (worse)."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in table.header)
    body = []
    pareto = table.header.index("pareto") if "pareto" in table.header else None
    for cells in table.rows:
        tds = []
        for c in cells:
            cls = {1: ' class="good"', -1: ' class="bad"'}.get(c.sign, "")
            delta = f'<span class="delta">{e(c.delta)}</span>' if c.delta else ""
            tds.append(f"<td{cls}>{e(c.text)}{delta}</td>")
        front = ' class="front"' if pareto is not None and cells[pareto].text else ""
        body.append(f"<tr{front}>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _flags_section(results: Results) -> str:
    e = html.escape
    raised = [(r, k, v) for r in results.rows for k, v in r.flags.items()]
    if raised:
        items = "".join(
            f"<tr><td>{e(r.label)}</td><td>{e(r.experiment)}</td><td>{e(k)}</td><td>{e(v)}</td></tr>"
            for r, k, v in raised
        )
        return (
            f'<section class="flags"><h2>&#9888; Gradient-masking warnings ({len(raised)})</h2>'
            "<p>The attacks' sanity checks failed for these models: their robust accuracy may be "
            "overestimated. Re-evaluate them with stronger or gradient-free attacks before trusting it.</p>"
            "<table><thead><tr><th>model</th><th>experiment</th><th>flag</th><th>message</th></tr></thead>"
            f"<tbody>{items}</tbody></table></section>"
        )
    adversarial = any(
        k.startswith("flag.") or (k.startswith("acc.") and k not in ("acc.clean", "acc.val"))
        for r in results.rows
        for k in r.metrics
    )
    if adversarial:
        return '<p class="ok">No gradient-masking flag was raised by the adversarial evaluations.</p>'
    return '<p class="ok">No adversarial evaluation in these results: no gradient-masking check was run.</p>'


def _pareto_section(results: Results, objectives: Sequence[Objective]) -> str:
    e = html.escape
    rows = results.comparison_rows()
    measured = measured_objectives(rows, objectives)
    wanted = ", ".join(f"{m} ({d})" for m, d in objectives)
    if len(measured) < 2:
        return (
            f'<h2>Pareto front</h2><p class="skipped">skipped: fewer than two of the objectives '
            f"{e(wanted)} were measured.</p>"
        )
    front = pareto_front([r.metrics for r in rows], measured)
    names = "".join(f"<li>{e(rows[i].label)}</li>" for i in front)
    unmeasured = [m for m, d in objectives if (m, d) not in measured]
    note = f" ({e(', '.join(unmeasured))} not measured)" if unmeasured else ""
    return (
        "<h2>Pareto front</h2>"
        f"<p>Non-dominated over {e(', '.join(f'{m} ({d})' for m, d in measured))}{note}: no other model "
        "is at least as good on every objective and better on one. Models missing an objective's "
        f"metric are left off.</p><ul>{names}</ul>"
    )
