"""Reports of a results store: comparison tables, Pareto fronts, plots and one HTML file."""

from robustcompress.report.curves import curve_plots
from robustcompress.report.html import render_report, write_report
from robustcompress.report.pareto import DEFAULT_OBJECTIVES, pareto_front
from robustcompress.report.plots import Plot, make_plots
from robustcompress.report.results import ModelRow, Results, load_results
from robustcompress.report.tables import Table, choose_columns, comparison_table

__all__ = [
    "DEFAULT_OBJECTIVES",
    "ModelRow",
    "Plot",
    "Results",
    "Table",
    "choose_columns",
    "comparison_table",
    "curve_plots",
    "load_results",
    "make_plots",
    "pareto_front",
    "render_report",
    "write_report",
]
