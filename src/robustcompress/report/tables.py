"""Comparison tables: one row per model, chosen metric columns, each change against the baseline.

The same table renders as Markdown, as aligned plain text (terminal) and, in html.py, as HTML.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from robustcompress.errors import ConfigError
from robustcompress.report.metrics import delta_sign, format_delta, format_value
from robustcompress.report.pareto import DEFAULT_OBJECTIVES, Objective, number, pareto_front
from robustcompress.report.provenance import DAGGER, basis, flagged_metrics, trusted
from robustcompress.report.results import ModelRow, Results

# Default columns, in this order, where measured (patterns match metric names).
DEFAULT_COLUMNS = [
    "acc.clean",
    "acc.worst_*",
    "acc.pgd_*",
    "acc.*",
    "mce",
    "mce.relative",
    "size.ratio",
    "size.bytes_compressed",
    "sparsity",
    "params.nonzero",
    "macs",
    "latency.cpu_ms.b1",
]
PARETO_COLUMN = "pareto"
FLAGS_COLUMN = "flags"


@dataclass
class Cell:
    text: str
    delta: str | None = None  # change against the baseline, e.g. "-1.20 pts"
    sign: int = 0  # +1 better than the baseline, -1 worse, 0 equal, undirected or flagged
    flagged: bool = False  # the figure carries a gradient-masking flag of its evaluation

    def plain(self) -> str:
        return f"{self.text} ({self.delta})" if self.delta else self.text


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # footnotes: flag marks, what each column was measured on

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        align = ["---"] + ["---:"] * (len(self.header) - 1)
        lines = [line(self.header), line(align), *(line([c.plain() for c in r]) for r in self.rows)]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))

    def text(self) -> str:
        body = [[c.plain() for c in r] for r in self.rows]
        widths = [max(len(r[i]) for r in [self.header, *body]) for i in range(len(self.header))]

        def line(cells: Sequence[str]) -> str:
            first, *rest = cells
            return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:]))])

        lines = [line(self.header), line(["-" * w for w in widths]), *(line(r) for r in body)]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))


def choose_columns(
    available: Sequence[str], requested: Sequence[str] | None = None, strict: bool = True
) -> list[str]:
    """Metric columns: `requested` names or patterns (e.g. 'acc.*'), else the measured defaults.

    A requested name that matches no measured metric is an error naming what was measured
    (with strict=False it is left out).
    """
    names = [n for n in available if not n.startswith("flag.")]
    patterns = list(requested) if requested else DEFAULT_COLUMNS
    out: list[str] = []
    for pattern in patterns:
        matched = [n for n in sorted(names) if fnmatch.fnmatchcase(n, pattern)]
        if requested and strict and not matched:
            measured = ", ".join(sorted(names)) or "none"
            raise ConfigError(f"no measured metric matches column {pattern!r}; measured: {measured}")
        out.extend(n for n in matched if n not in out)
    return out


def measured_objectives(rows: Sequence[ModelRow], objectives: Sequence[Objective]) -> list[Objective]:
    """The objectives that at least one row has a number for."""
    return [o for o in objectives if any(number(r.metrics.get(o[0])) is not None for r in rows)]


def comparison_table(
    results: Results,
    columns: Sequence[str] | None = None,
    *,
    rows: Sequence[ModelRow] | None = None,
    objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
    strict: bool = True,
    include_flagged: bool = False,
) -> Table:
    """Each baseline once and every final model (or `rows`), with changes against the baseline.

    A 'pareto' column marks the rows on the front of the measured `objectives` (when two or more
    were measured) and a 'flags' column counts gradient-masking flags (when any was raised).
    `columns` as in choose_columns. A figure carrying a gradient-masking flag of its evaluation is
    marked with a dagger, not coloured, and kept off the front unless include_flagged. The notes
    say what each column was measured on (test images, attack budget).
    """
    rows = list(results.comparison_rows() if rows is None else rows)
    cols = choose_columns(sorted({k for r in rows for k in r.metrics}), columns, strict)
    measured = measured_objectives(rows, objectives)
    scored = [trusted(r, include_flagged) for r in rows]
    front = set(pareto_front(scored, measured)) if len(measured) >= 2 else None
    show_flags = any(r.flags for r in rows)
    header = ["model", *([PARETO_COLUMN] if front is not None else []), *cols]
    table = Table(header + ([FLAGS_COLUMN] if show_flags else []))
    any_flagged = False
    for i, row in enumerate(rows):
        base = results.baseline_of(row.experiment) if row.model != "baseline" else None
        flagged = flagged_metrics(row)
        cells = [Cell(row.label)]
        if front is not None:
            cells.append(Cell("yes" if i in front else ""))
        for c in cols:
            value = row.metrics.get(c)
            b = base.metrics.get(c) if base else None
            paired = row.metrics.get(f"{c}.ratio")  # latency timed interleaved with the baseline
            if c.startswith("latency.") and b is not None and isinstance(value, float) and paired:
                b = value / paired  # the change is the paired per-round ratio, not the medians' ratio
            cell = Cell(format_value(c, value), format_delta(c, value, b), delta_sign(c, value, b))
            if c in flagged and value is not None:
                cell.text, cell.sign, cell.flagged, any_flagged = cell.text + DAGGER, 0, True, True
            cells.append(cell)
        if show_flags:
            cells.append(Cell(str(len(row.flags)) if row.flags else "", sign=-1 if row.flags else 0))
        table.rows.append(cells)
    if any_flagged:
        kept = (
            "counted on the Pareto front (--include-flagged)"
            if include_flagged
            else "kept off the Pareto front"
        )
        table.notes.append(
            f"{DAGGER} measured by an evaluation that raised a flag on this model (gradient masking: likely "
            f"overestimated; or a latency not rankable against its baseline; see the warnings): not "
            f"coloured and {kept}."
        )
    table.notes += measured_on(results, rows, cols)
    return table


def measured_on(results: Results, rows: Sequence[ModelRow], cols: Sequence[str]) -> list[str]:
    """'acc.pgd_linf_0.1: 100 test images; L-inf eps 0.1; pgd (10 steps)' per column that has a basis;
    where models differ, each basis names its models."""
    bodies: dict[str, list[str]] = {}  # note text -> the columns it describes
    for c in cols:
        bases: dict[str, list[str]] = {}
        for r in rows:
            if c in r.metrics and (b := basis(c, r, results.configs.get(r.experiment))):
                bases.setdefault(b, []).append(r.label)
        having = sum(c in r.metrics for r in rows)
        if len(bases) == 1 and len(next(iter(bases.values()))) == having:
            bodies.setdefault(next(iter(bases)), []).append(c)
        elif bases:
            text = " | ".join(f"{b} ({', '.join(labels)})" for b, labels in bases.items())
            bodies.setdefault(text, []).append(c)
    return [f"{', '.join(columns)}: measured on {text}" for text, columns in bodies.items()]
