"""A new stage and a new evaluation, each defined in one test-local module (tests/plugins/sharpen.py),
run through a `run` config and read back from the results store and the HTML report.

Nothing in the package is edited for them: the config's `plugins` key imports the module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import load_config
from robustcompress.experiments.store import RESULTS_DB, ResultsStore

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
name = "plugin"
output = "{out}"
plugins = ["tests.plugins.sharpen"]
evaluations = [{{type = "clean"}}, {{type = "confidence"}}]

[data]
dataset = "fashion-mnist"
root = "{root}"
limit_train = 600
limit_test = 200

[model]
name = "cnn8"
width = 0.25

[train]
epochs = 1
batch_size = 64

[[recipes]]
name = "sharper"
stages = [{{type = "sharpen", factor = 3.0}}]

[[recipes]]
name = "flatter"
stages = [{{type = "sharpen", factor = 0.5}}]
"""


class _Cells(HTMLParser):
    """Every table row as (cell class, cell text) pairs, with the header row's texts first."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = [dict(attrs).get("class") or "", ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((self._cell[0], self._cell[1].strip()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def _signs(html: str, metric: str) -> dict[str, str]:
    """experiment text -> the class ("good", "bad", "") of its `metric` cell, from the comparison tables."""
    parser = _Cells()
    parser.feed(html)
    out = {}
    for table in parser.tables:
        header = [text for _, text in table[0]] if table else []
        if metric not in header:
            continue
        col = header.index(metric)
        for row in table[1:]:
            label = " ".join(text for _, text in row)
            for recipe in ("sharper", "flatter"):
                if re.search(rf"\b{recipe}\b", label):
                    out[recipe] = row[col][0]
    return out


@pytest.mark.slow
def test_a_test_local_stage_and_evaluation_run_into_the_store_and_report(tmp_path, data_root):
    config = tmp_path / "plugin.toml"
    config.write_text(CONFIG.format(out=tmp_path / "runs", root=data_root))
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    metrics: dict[tuple[str, str], dict] = {}
    for experiment, model, _artifact, name, value in ResultsStore.open(
        tmp_path / "runs" / RESULTS_DB
    ).records():
        metrics.setdefault((experiment.split("/")[-1], model), {})[name] = value
    finals = {recipe: metrics[(recipe, "final")] for recipe in ("sharper", "flatter")}
    base = metrics[("sharper", "baseline")]
    # scaling the last layer keeps every prediction and moves confidence the way the factor says
    for recipe in ("sharper", "flatter"):
        assert finals[recipe]["acc.clean"] == base["acc.clean"]
    assert finals["sharper"]["conf.mean"] > base["conf.mean"] > finals["flatter"]["conf.mean"]
    assert finals["sharper"]["conf.entropy"] < base["conf.entropy"] < finals["flatter"]["conf.entropy"]

    report = tmp_path / "report.html"
    # a fresh process, as a user runs it: the report imports the plugins the stored configs name
    args = ["report", str(tmp_path / "runs"), "--out", str(report), "--columns", "acc.clean,conf.*"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "robustcompress.cli", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    html = report.read_text()
    # directions come from the evaluation's MetricSpecs: higher conf.mean and lower entropy are good
    assert _signs(html, "conf.mean") == {"sharper": "good", "flatter": "bad"}
    assert _signs(html, "conf.entropy") == {"sharper": "good", "flatter": "bad"}


def test_a_plugin_module_that_does_not_import_is_a_config_error(tmp_path, data_root):
    config = tmp_path / "bad.toml"
    config.write_text(
        CONFIG.format(out=tmp_path / "runs", root=data_root).replace(
            "tests.plugins.sharpen", "no_such.module"
        )
    )
    with pytest.raises(ConfigError, match="no_such.module.*PYTHONPATH"):
        load_config(config)
