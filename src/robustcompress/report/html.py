"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no external assets).

Order of the page: a summary (what was compared, the best model per objective, the Pareto set, the
flags raised), the gradient-masking warnings (a robust accuracy under a flag is not to be trusted),
then the comparison table, the Pareto front, the plots, the analysis figures and each experiment's
models and config. Every table says under it what its columns were measured on.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from robustcompress.experiments.runner import experiment_folder
from robustcompress.experiments.store import results_path
from robustcompress.fileio import atomic_write_text
from robustcompress.report.curves import curve_plots
from robustcompress.report.metrics import format_value
from robustcompress.report.pareto import DEFAULT_OBJECTIVES, Objective, number, pareto_front
from robustcompress.report.plots import make_plots, robust_metrics
from robustcompress.report.provenance import DAGGER, basis, flag_summary, trusted
from robustcompress.report.results import Results, load_results
from robustcompress.report.tables import Table, comparison_table, measured_objectives, measured_on

REPORT_NAME = "report.html"
MAX_NAMED = 12  # the summary names the compared models up to this many; the table lists every one

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 90em; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; white-space: nowrap; }
th { background: #f4f4f4; } tr.front td:first-child { font-weight: bold; }
.delta { color: #666; font-size: 0.85em; margin-left: 0.3em; white-space: nowrap; }
.good .delta { color: #1a7f37; } .bad .delta { color: #c62828; }
.flags { border: 2px solid #c62828; background: #fdecea; padding: 0.6em 1em; border-radius: 6px; }
.flags h2 { color: #c62828; border: none; margin-top: 0.2em; }
.ok { border: 1px solid #ccc; background: #f6f8fa; padding: 0.4em 1em; border-radius: 6px; }
.skipped { color: #8a6d3b; } .muted { color: #666; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; max-width: 100%; vertical-align: top; }
img { max-width: 100%; } figcaption { font-size: 0.85em; max-width: 42em; }
td.flagged { color: #8a6d3b; font-style: italic; }
ul.notes { font-size: 0.8em; color: #555; margin-top: 0; padding-left: 1.2em; }
.summary { border: 1px solid #9ab; background: #f3f7fb; padding: 0.4em 1em; border-radius: 6px; }
.summary h2 { border: none; margin-top: 0.3em; } .bad-text { color: #c62828; }
.summary td, .summary th, .flags td, .flags th { text-align: left; }
.summary { margin-bottom: 1em; } .scroll { overflow-x: auto; max-width: 100%; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def write_report(
    output_folder: str | Path,
    path: str | Path | None = None,
    *,
    columns: Sequence[str] | None = None,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
    include_flagged: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the HTML report of a `robustcompress run` output folder; returns its path.

    `path` defaults to <output_folder>/report.html; it is written to a temporary name and renamed,
    so a reader never sees half a report. A folder without results.sqlite is a ConfigError.
    `log` hears about skipped plots and raised gradient-masking flags.
    """
    results = load_results(output_folder)
    target = Path(path) if path is not None else results_path(output_folder).parent / REPORT_NAME
    text = render_report(
        results, columns=columns, objectives=objectives, include_flagged=include_flagged, log=log
    )
    return atomic_write_text(target, text)


def render_report(
    results: Results,
    *,
    columns: Sequence[str] | None = None,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
    include_flagged: bool = False,
    log: Callable[[str], None] | None = None,
) -> str:
    """The report as one HTML string."""
    e = html.escape
    log = log or (lambda msg: None)
    flags = [f for r in results.rows for f in r.flags]
    if flags:
        log(f"warning: {flag_summary(flags)} raised; see the report's first section")
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
    ]
    if not rows:
        parts += [
            _flags_section(results),
            "<p>No results yet: the store holds no evaluated model.</p></body></html>",
        ]
        return "\n".join(parts)

    parts += [
        summary_html(results, objectives, include_flagged),
        _flags_section(results),
        "<h2>Comparison</h2>",
        "<p>Each baseline once, then every experiment's final model; changes are against the "
        "experiment's own baseline (accuracies in percentage points, mCE in points, sizes, "
        "counts and latencies in %).</p>",
        table_html(
            comparison_table(results, columns, objectives=objectives, include_flagged=include_flagged)
        ),
        _pareto_section(results, objectives, include_flagged),
        _compact_section(results),
        "<h2>Plots</h2>",
    ]
    for plot in make_plots(rows, include_flagged) + curve_plots(results):
        if plot.png is None:
            log(f"plot '{plot.title}' {plot.skipped}")
            parts.append(f'<p class="skipped"><b>{e(plot.title)}</b>: {e(plot.skipped or "")}</p>')
        else:
            notes = measured_on(results, rows, plot.metrics)
            parts.append(_figure_html(plot.png, plot.title, notes, plot.caption))
    parts.append(_analysis_section(results))
    parts.append("<h2>Experiments</h2>")
    for name in results.experiments:
        models = results.models_of(name)
        config = results.configs.get(name)
        parts += [
            f"<h3>{e(name)}</h3>",
            f"<p>recipe: {e(recipe_summary(config))}</p>" if config is not None else "",
            table_html(
                comparison_table(
                    results,
                    columns,
                    rows=models,
                    objectives=(),
                    strict=False,
                    include_flagged=include_flagged,
                )
            ),
            "<details><summary>config</summary><pre>"
            + e(
                json.dumps(config, indent=2, sort_keys=True) if config is not None else "(not stored)",
                quote=False,
            )
            + "</pre></details>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_html(results: Results, objectives: Sequence[Objective], include_flagged: bool = False) -> str:
    """What was compared, the best model on each objective, the Pareto set and the flags raised."""
    e = html.escape
    rows = results.comparison_rows()
    compared = compared_setup(results)
    lines = [
        '<section class="summary"><h2>Summary</h2>',
        f"<p><b>Compared</b>: {len(rows)} model(s) from {len(results.experiments)} experiment(s)"
        + (f" &middot; {e(compared)}" if compared else "")
        + (
            f": {e(', '.join(r.label for r in rows))}.</p>"
            if len(rows) <= MAX_NAMED
            else " (the comparison table lists them).</p>"
        ),
    ]
    best = best_per_objective(results, objectives, include_flagged)
    if best:
        body = "".join(
            f"<tr><td>{e(metric)} ({'higher' if d == 'max' else 'lower'} is better)</td>"
            f"<td>{e(', '.join(labels))}</td>"
            f"<td>{e(value)}</td><td>{e(on or '-')}</td></tr>"
            for metric, d, labels, value, on in best
        )
        lines.append(
            "<table><thead><tr><th>objective</th><th>best model</th><th>value</th><th>measured on</th></tr>"
            f"</thead><tbody>{body}</tbody></table>"
        )
    measured = measured_objectives(rows, objectives)
    if len(measured) >= 2:
        front = pareto_front([trusted(r, include_flagged) for r in rows], measured)
        lines.append(
            f"<p><b>Pareto set</b> over {e(', '.join(m for m, _ in measured))}: "
            f"{e(', '.join(rows[i].label for i in front)) or 'none'}.</p>"
        )
    kept = against_baseline(results, measured, include_flagged)
    if kept:
        lines.append(
            "<p><b>Against their own baseline</b>: "
            + "; ".join(
                f"{e(m)} at or better in {k} of {n} compressed models ({k / n:.0%})" for m, k, n in kept
            )
            + ".</p>"
        )
    raised = [r for r in results.rows if r.flags]
    if raised:
        names = sorted({f"{r.label}: {', '.join(sorted(r.flags))}" for r in raised})
        kept = (
            "counted anyway (--include-flagged)"
            if include_flagged
            else "left out of the best values and the front"
        )
        lines.append(
            f'<p class="bad-text"><b>Flags raised</b>: {flag_summary(f for r in raised for f in r.flags)} '
            f"on {len(raised)} model(s) ({e('; '.join(names))}); the figures they concern are marked "
            f"{DAGGER} and {kept}.</p>"
        )
    else:
        lines.append("<p><b>Flags raised</b>: none.</p>")
    lines.append("</section>")
    return "\n".join(lines)


def against_baseline(
    results: Results, objectives: Sequence[Objective], include_flagged: bool = False
) -> list[tuple[str, int, int]]:
    """(metric, models at or better than their own baseline, models compared) per objective: paper
    000's "69% of compressed models have an mCE at or below their baseline's" for any objective."""
    out = []
    for metric, direction in objectives:
        kept = compared = 0
        for r in results.rows:
            base = results.baseline_of(r.experiment)
            if r.model != "final" or base is None or base.artifact == r.artifact:
                continue
            v, b = (number(trusted(x, include_flagged).get(metric)) for x in (r, base))
            if v is None or b is None:
                continue
            compared += 1
            kept += v >= b if direction == "max" else v <= b
        if compared:
            out.append((metric, kept, compared))
    return out


def compared_setup(results: Results) -> str:
    """'cnn8 (width 0.5) on fashion-mnist (100 test images)' from the stored configs."""
    models, data = [], []
    for config in results.configs.values():
        m, d = config.get("model") or {}, config.get("data") or {}
        if m.get("name"):
            width = m.get("width")
            models.append(f"{m['name']}" + (f" (width {width:g})" if width not in (None, 1, 1.0) else ""))
        if d.get("dataset"):
            limit = d.get("limit_test")
            data.append(f"{d['dataset']}" + (f" ({limit} test images)" if limit else " (full test set)"))
    models, data = list(dict.fromkeys(models)), list(dict.fromkeys(data))
    if not models and not data:
        return ""
    return f"{', '.join(models) or 'models'} on {', '.join(data) or 'the stored data'}"


def best_per_objective(
    results: Results, objectives: Sequence[Objective], include_flagged: bool = False
) -> list[tuple[str, str, list[str], str, str | None]]:
    """(metric, direction, best models, value, measured on) per measured objective and worst-case
    robust accuracy; flagged figures do not compete unless include_flagged."""
    rows = results.comparison_rows()
    wanted = list(objectives) + [
        (m, "max") for m in robust_metrics(rows) if m.startswith("acc.worst_") and m not in dict(objectives)
    ]
    out = []
    for metric, direction in wanted:
        scored = [(number(trusted(r, include_flagged).get(metric)), r) for r in rows]
        scored = [(v, r) for v, r in scored if v is not None]
        if not scored:
            continue
        top = max(v for v, _ in scored) if direction == "max" else min(v for v, _ in scored)
        winners = [r for v, r in scored if v == top]
        on = basis(metric, winners[0], results.configs.get(winners[0].experiment))
        out.append((metric, direction, [r.label for r in winners], format_value(metric, top), on))
    return out


def _figure_html(png: bytes, title: str, notes: Sequence[str] = (), caption: str = "") -> str:
    e = html.escape
    data = base64.b64encode(png).decode("ascii")
    caption = (
        e(title)
        + (f"<br>{e(caption)}" if caption else "")
        + "".join(f'<br><span class="muted">{e(n)}</span>' for n in notes)
    )
    image = f'<img alt="{e(title)}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


ANALYSIS_KINDS = {
    "boundary-pca": "Decision regions in the plane of the first two principal components (paper 002)",
    "boundary-sections": "Boundary cross-sections: adversarial x random direction (Fawzi et al.)",
    "tsne": "t-SNE of clean and adversarial features, layer by layer (paper 003)",
}


def analysis_figures(results: Results) -> dict[str, list[tuple[str, Path]]]:
    """experiment -> [(title, PNG path)] written by the `analysis` evaluation in its run folder."""
    root = results.folder if results.folder.is_dir() else results.folder.parent
    out: dict[str, list[tuple[str, Path]]] = {}
    for name in results.experiments:
        folder = root / experiment_folder(name) / "analysis"
        for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            stem = path.stem.split("-", 1)[1] if "-" in path.stem else path.stem
            title = ANALYSIS_KINDS.get(stem, stem)
            out.setdefault(name, []).append((f"{title} (model {path.stem.split('-', 1)[0]})", path))
    return out


def _analysis_basis(kind: str, cfg: dict, limit: int | None) -> str:
    """What an analysis figure was drawn from (defaults as robustcompress.analysis.AnalysisConfig)."""
    cap = (lambda n: min(n, limit)) if limit else (lambda n: n)  # noqa: E731
    budget = f"{cfg.get('norm', 'linf')} eps {cfg.get('eps', 0.1):g}, PGD {cfg.get('steps', 20)} steps"
    if kind == "boundary-pca":
        return f"{cap(cfg.get('pca_images', 1000))} test images (a {cfg.get('pca_resolution', 60)}-cell grid)"
    if kind == "boundary-sections":
        return f"{cfg.get('n_sections', 3)} test images; {budget}"
    if kind == "tsne":
        return f"{cfg.get('tsne_images', 100)} test images of class {cfg.get('tsne_class', 0)}; {budget}"
    return f"{cap(cfg.get('n_images', 20))} test images; {budget}"


def _analysis_section(results: Results) -> str:
    figures = analysis_figures(results)
    if not figures:
        return ""
    e = html.escape
    parts = [
        "<h2>Analysis figures</h2>",
        "<p>Written by the <code>analysis</code> evaluation: each compressed model beside its parent, on the "
        "same axes and colours.</p>",
    ]
    for name, items in figures.items():
        config = results.configs.get(name) or {}
        cfg = next((c for c in config.get("evaluations") or [] if c.get("type") == "analysis"), {})
        parts.append(f"<h3>{e(name)}</h3>")
        for title, path in items:
            png = path.read_bytes()
            if png.startswith(b"\x89PNG"):
                on = _analysis_basis(
                    path.stem.split("-", 1)[-1], cfg, (config.get("data") or {}).get("limit_test")
                )
                parts.append(_figure_html(png, title, [f"measured on {on}"]))
    return "\n".join(parts)


def compact_models(results: Results) -> list[dict]:
    """The compact models of the study (recipes with a `compact` stage): the width the stage chose
    (the final artifact's model spec) and, where its metadata has them, what it matched and how near."""
    root = results.folder if results.folder.is_dir() else results.folder.parent
    out = []
    for name in results.experiments:
        stages = (results.configs.get(name) or {}).get("stages") or []
        compact = next((s for s in stages if s.get("type") == "compact"), None)
        final = next((r for r in results.models_of(name) if r.model == "final"), None)
        meta_path = root / "artifacts" / final.artifact / "meta.json" if final else None
        if compact is None or meta_path is None or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        info = (meta.get("training") or {}).get("compact") or {}
        out.append({
            "label": final.label, "model": (meta.get("model") or {}).get("name", "?"),
            "width": (meta.get("model") or {}).get("width"), "match": compact.get("match", "params"),
            "target": info.get("target"), "measured": info.get("measured"),
        })  # fmt: skip
    return out


def _compact_section(results: Results) -> str:
    rows = compact_models(results)
    if not rows:
        return ""
    e = html.escape
    unit = {"params": "non-zero parameters", "size": "rcz bytes"}
    body = "".join(
        f"<tr><td>{e(r['label'])}</td><td>{e(str(r['model']))}</td><td>{r['width']:g}</td>"
        f"<td>{e(unit.get(r['match'], r['match']))}</td>"
        f"<td>{_count(r['target'])}</td><td>{_count(r['measured'])}</td></tr>"
        for r in rows
    )
    return (
        "<h2>Compact models of the same size</h2><p>Each dense model was built at the width whose size "
        "matches its compressed parent (the <code>compact</code> stage's bisection over the width), then "
        "trained from scratch.</p><table><thead><tr><th>model</th><th>architecture</th><th>width</th>"
        "<th>matched on</th><th>the compressed parent</th><th>the compact model</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _count(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


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
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in table.header)
    body = []
    pareto = table.header.index("pareto") if "pareto" in table.header else None
    for cells in table.rows:
        tds = []
        for c in cells:
            cls = {1: ' class="good"', -1: ' class="bad"'}.get(c.sign, "")
            if c.flagged:
                cls = ' class="flagged" title="carries a flag: not to be ranked by (see Flags raised)"'
            delta = f'<span class="delta">{e(c.delta)}</span>' if c.delta else ""
            tds.append(f"<td{cls}>{e(c.text)}{delta}</td>")
        front = ' class="front"' if pareto is not None and cells[pareto].text else ""
        body.append(f"<tr{front}>{''.join(tds)}</tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in table.notes)
    notes = f'<ul class="notes">{notes}</ul>' if notes else ""
    table_tag = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table_tag}</div>{notes}'


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


def _pareto_section(results: Results, objectives: Sequence[Objective], include_flagged: bool = False) -> str:
    e = html.escape
    rows = results.comparison_rows()
    measured = measured_objectives(rows, objectives)
    wanted = ", ".join(f"{m} ({d})" for m, d in objectives)
    if len(measured) < 2:
        return (
            f'<h2>Pareto front</h2><p class="skipped">skipped: fewer than two of the objectives '
            f"{e(wanted)} were measured.</p>"
        )
    front = pareto_front([trusted(r, include_flagged) for r in rows], measured)
    names = "".join(f"<li>{e(rows[i].label)}</li>" for i in front)
    unmeasured = [m for m, d in objectives if (m, d) not in measured]
    note = f" ({e(', '.join(unmeasured))} not measured)" if unmeasured else ""
    return (
        "<h2>Pareto front</h2>"
        f"<p>Non-dominated over {e(', '.join(f'{m} ({d})' for m, d in measured))}{note}: no other model "
        "is at least as good on every objective and better on one. Models missing an objective's "
        "metric are left off"
        + ("" if include_flagged else f", and so are figures marked {DAGGER} (flagged)")
        + f".</p><ul>{names}</ul>"
    )
