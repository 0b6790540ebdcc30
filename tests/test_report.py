import base64
import re
import shutil

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.errors import ConfigError
from robustcompress.experiments.config import load_config
from robustcompress.experiments.runner import run_experiments
from robustcompress.experiments.store import ResultsStore
from robustcompress.report import (
    comparison_table,
    load_results,
    make_plots,
    pareto_front,
    write_report,
)

ACC, MCE, RATIO = ("acc.clean", "max"), ("mce", "min"), ("size.ratio", "max")
PNG_DATA = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


# ---- Pareto fronts on points whose answer is known ------------------------------------------


def test_pareto_two_objectives_with_ties_and_dominated_points():
    rows = [
        {"acc.clean": 0.9, "size.ratio": 1.0},  # 0 best accuracy
        {"acc.clean": 0.8, "size.ratio": 4.0},  # 1 trade-off
        {"acc.clean": 0.7, "size.ratio": 4.0},  # 2 dominated by 1 (same ratio, lower accuracy)
        {"acc.clean": 0.6, "size.ratio": 9.0},  # 3 best ratio
        {"acc.clean": 0.8, "size.ratio": 4.0},  # 4 tie with 1: neither dominates the other
        {"acc.clean": 0.5, "size.ratio": 3.0},  # 5 dominated by 1, 3 and 4
    ]
    assert pareto_front(rows, [ACC, RATIO]) == [0, 1, 3, 4]
    # min direction: minimising accuracy, 5 (lowest) and 3 (lowest but for 5, best ratio) win
    assert pareto_front(rows, [("acc.clean", "min"), RATIO]) == [3, 5]
    assert pareto_front(rows, [ACC]) == [0]


def test_pareto_three_objectives_like_paper_000():
    rows = [
        {"acc.clean": 0.93, "mce": 100.0, "size.ratio": 1.0},  # 0 baseline: best accuracy
        {"acc.clean": 0.92, "mce": 90.0, "size.ratio": 4.0},  # 1 better mCE and ratio
        {"acc.clean": 0.91, "mce": 95.0, "size.ratio": 3.9},  # 2 dominated by 1
        {"acc.clean": 0.85, "mce": 120.0, "size.ratio": 9.4},  # 3 best ratio, poor mCE
        {"acc.clean": 0.61, "mce": 201.7, "size.ratio": 4.0},  # 4 dominated by 1 (paper's #10)
        {"acc.clean": 0.90, "mce": 76.7, "size.ratio": 7.0},  # 5 best mCE
    ]
    assert pareto_front(rows, [ACC, MCE, RATIO]) == [0, 1, 3, 5]
    # identical rows are both on the front
    assert pareto_front([rows[1], dict(rows[1])], [ACC, MCE, RATIO]) == [0, 1]


def test_pareto_missing_metrics():
    rows = [
        {"acc.clean": 0.9, "mce": 100.0},  # 0
        {"acc.clean": 0.95},  # 1 no mCE: would dominate 0 and 2 if mCE counted as anything good
        {"acc.clean": 0.8, "mce": 80.0},  # 2
        {"acc.clean": 0.7, "mce": float("nan")},  # 3 NaN counts as missing
        {"acc.clean": "n/a", "mce": 70.0},  # 4 text counts as missing
        {},  # 5 nothing measured
    ]
    assert pareto_front(rows, [ACC, MCE]) == [0, 2]
    # missing = worst: 1 has the best accuracy so stays; 4 has the best mCE so stays;
    # 3 is beaten by 0 (better accuracy, real mCE); 5 has nothing and is never on the front
    assert pareto_front(rows, [ACC, MCE], missing="worst") == [0, 1, 2, 4]
    assert pareto_front([], [ACC, MCE]) == []


def test_pareto_rejects_bad_objectives():
    with pytest.raises(ConfigError, match="'max' or 'min'"):
        pareto_front([{"a": 1}], [("a", "up")])
    with pytest.raises(ConfigError, match="at least one"):
        pareto_front([{"a": 1}], [])
    with pytest.raises(ConfigError, match="missing"):
        pareto_front([{"a": 1}], [("a", "max")], missing="skip")


# ---- a real run, and a synthetic multi-recipe study on top of it -----------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, data_root):
    """A real tiny run: cnn8 x0.25, 300 Fashion-MNIST images, one epoch; recipes plain and tuned."""
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "tiny.toml"
    path.write_text(f"""
name = "tiny"
output = "{tmp / "out"}"
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = 300
limit_test = 100
[model]
name = "cnn8"
width = 0.25
[train]
epochs = 1
batch_size = 64
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "tuned"
stages = [{{type = "finetune", epochs = 1}}]
""")
    results = run_experiments(load_config(path), progress=False, log=lambda m: None)
    return tmp / "out", results


# Synthetic recipes of the same study: (acc.clean, mce, size.ratio, acc.pgd_linf_0.1).
SYNTHETIC = {
    "tiny/prune50": (-0.02, 95.0, 2.0, 0.30),  # acc.clean: change from the real baseline
    "tiny/pcqat-int8": (-0.05, 80.0, 9.0, 0.20),
    "tiny/qat-int8": (-0.20, 150.0, 4.0, 0.05),  # dominated by pcqat-int8 on every objective
}


@pytest.fixture(scope="module")
def study(real_run, tmp_path_factory):
    """The real store copied, with the baseline's size/mCE/PGD and three synthetic recipes added."""
    out, results = real_run
    folder = tmp_path_factory.mktemp("study")
    shutil.copy(out / "results.sqlite", folder / "results.sqlite")
    store = ResultsStore(folder / "results.sqlite")
    base = results[0].metrics["baseline"]
    art = next(iter(load_results(folder).comparison_rows())).artifact
    store.add_metrics("tiny/plain", "baseline", art, "extra", {"mce": 100.0, "size.ratio": 1.0})
    store.add_metrics("tiny/plain", "baseline", art, "adv", {"acc.pgd_linf_0.1": 0.25})
    for name, (dacc, mce, ratio, pgd) in SYNTHETIC.items():
        acc = base["acc.clean"] + dacc
        store.add_experiment(name, {"name": name, "stages": [{"type": "synthetic"}]})
        store.add_metrics(name, "baseline", art, "clean", {"acc.clean": base["acc.clean"]})
        store.add_metrics(name, "baseline", art, "extra", {"mce": 100.0, "size.ratio": 1.0})
        final = {"acc.clean": acc, "mce": mce, "size.ratio": ratio, "acc.pgd_linf_0.1": pgd}
        if name == "tiny/qat-int8":
            final["flag.zero_grad"] = "gradients are zero on 80% of inputs: masking suspected"
        store.add_metrics(name, "final", f"{name}-art", "all", final)
    return folder, base


def test_real_run_report_skips_missing_plots(real_run):
    out, results = real_run
    rows = load_results(out)
    assert [(r.experiment, r.model) for r in rows.comparison_rows()] == [
        ("tiny/plain", "baseline"),  # shared baseline shown once
        ("tiny/tuned", "final"),
    ]
    plots = make_plots(rows.comparison_rows())
    assert all(p.png is None for p in plots)  # only acc.clean was measured
    assert "size.ratio" in plots[0].skipped and "size evaluation" in plots[0].skipped
    assert "mce" in plots[2].skipped and "corruption" in plots[2].skipped

    logs: list[str] = []
    path = write_report(out, log=logs.append)
    assert path == out / "report.html"
    html = path.read_text()
    tuned = results[1].metrics
    delta = 100 * (tuned["final"]["acc.clean"] - tuned["baseline"]["acc.clean"])
    assert f"{100 * tuned['final']['acc.clean']:.2f}%" in html
    assert f"{delta:+.2f} pts" in html
    assert "skipped: no model has size.ratio" in html and "No adversarial evaluation" in html
    assert "recipe: finetune(epochs=1)" in html and "baseline only (no stages)" in html
    assert '"finetune"' in html  # each experiment's config
    assert sum("skipped" in m for m in logs) == 3
    assert not list(out.glob(".report.html.*"))  # no temp file left behind


def test_study_table_deltas_and_pareto(study):
    folder, base = study
    results = load_results(folder)
    labels = [r.label for r in results.comparison_rows()]
    assert labels == ["baseline", "tuned", "prune50", "pcqat-int8", "qat-int8"]
    table = comparison_table(results, ["acc.clean", "mce", "size.ratio"])
    assert table.header == ["model", "pareto", "acc.clean", "mce", "size.ratio", "flags"]
    cells = {row[0].text: row for row in table.rows}
    # baseline: best accuracy; prune50 and pcqat-int8 trade accuracy for mCE and ratio;
    # tuned lacks mCE and ratio (excluded); qat-int8 is dominated by pcqat-int8
    assert {name for name, row in cells.items() if row[1].text == "yes"} == {
        "baseline",
        "prune50",
        "pcqat-int8",
    }
    assert cells["pcqat-int8"][2].plain().endswith("(-5.00 pts)")
    assert cells["pcqat-int8"][3].plain() == "80.0 (-20.0)" and cells["pcqat-int8"][3].sign == 1
    assert cells["qat-int8"][3].plain() == "150.0 (+50.0)" and cells["qat-int8"][3].sign == -1
    assert cells["pcqat-int8"][4].plain() == "9.00x (+8.00x)"
    assert cells["qat-int8"][5].text == "1" and cells["baseline"][5].text == ""
    markdown = table.markdown().splitlines()
    assert markdown[0] == "| model | pareto | acc.clean | mce | size.ratio | flags |"
    assert markdown[1].startswith("| --- | ---: |") and len(markdown) == 2 + 5
    text = table.text().splitlines()
    assert text[0].split() == ["model", "pareto", "acc.clean", "mce", "size.ratio", "flags"]
    assert len({len(line) for line in text}) == 1  # aligned
    with pytest.raises(ConfigError, match="no measured metric matches column 'latency"):
        comparison_table(results, ["latency.cpu_ms.b1"])
    assert comparison_table(results, ["acc.*"]).header[2:4] == ["acc.clean", "acc.pgd_linf_0.1"]


def test_study_html_report_is_self_contained(study, tmp_path):
    folder, _ = study
    path = write_report(folder, tmp_path / "sub" / "r.html")
    html = path.read_text()
    images = PNG_DATA.findall(html)
    assert len(images) == 3  # accuracy vs ratio, robust vs clean, mCE vs ratio
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing external
    assert "<table>" in html and "pcqat-int8" in html
    # the flag is listed before the comparison table, with its message
    warn = html.index("Gradient-masking warnings (1)")
    assert warn < html.index("<h2>Comparison</h2>")
    assert "masking suspected" in html[warn : html.index("<h2>Comparison</h2>")]
    front = html[html.index("<h2>Pareto front</h2>") : html.index("<h2>Plots</h2>")]
    assert re.findall(r"<li>(.*?)</li>", front) == ["baseline", "prune50", "pcqat-int8"]


def test_cli_report(study, real_run, tmp_path):
    folder, _ = study
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(folder), "--out", str(out), "--markdown"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "| model | pareto |" in res.output
    assert "gradient-masking flag" in res.output  # stderr is mixed into output by CliRunner

    db = str(folder / "results.sqlite")  # the store file itself works too
    res = CliRunner().invoke(main, ["report", db, "--columns", "acc.clean,size.ratio"])
    assert res.exit_code == 0 and (folder / "report.html").is_file()
    assert res.output.splitlines()[0].split() == ["model", "pareto", "acc.clean", "size.ratio", "flags"]

    missing = CliRunner().invoke(main, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results store" in missing.output
    assert "Traceback" not in missing.output
    bad = CliRunner().invoke(main, ["report", str(folder), "--columns", "nope"])
    assert bad.exit_code == 2 and "measured:" in bad.output


def test_empty_store_reports_no_results(tmp_path):
    ResultsStore(tmp_path / "results.sqlite")
    html = write_report(tmp_path).read_text()
    assert "No results yet" in html


def test_a_file_that_is_not_a_store_is_a_clear_error_for_report_and_results(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"not a database, just bytes" * 40)
    for command in (["report", str(tmp_path)], ["results", str(tmp_path)]):
        out = CliRunner().invoke(main, command)
        assert out.exit_code == 2 and "not a readable results store" in out.output, command
        assert "Traceback" not in out.output
    assert (tmp_path / "results.sqlite").read_bytes().startswith(b"not a database")  # left untouched


def test_grid_baselines_are_each_shown_and_named(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    for width, art, acc in (("0.5", "a1", 0.7), ("1.0", "a2", 0.8)):
        name = f"g[width={width}]"
        store.add_experiment(name, {"name": name, "stages": []})
        store.add_metrics(name, "baseline", art, "clean", {"acc.clean": acc, "size.bytes": 2.5e6})
    store.add_metrics("g[width=1.0]", "final", "a3", "clean", {"acc.clean": 0.75, "size.bytes": 6.25e5})
    results = load_results(tmp_path)
    assert [r.label for r in results.comparison_rows()] == [
        "g[width=0.5] (baseline)",
        "g[width=1.0] (baseline)",
        "g[width=1.0]",
    ]
    final = comparison_table(results, ["size.bytes"]).rows[2]
    assert final[1].plain() == "625 kB (-75.0%)" and final[1].sign == 1


# ---- metric kinds and directions come from the evaluations' MetricSpecs -----------------------


def test_directions_and_display_come_from_the_registered_specs():
    from robustcompress.evaluation.registry import metric_info, producer
    from robustcompress.report.metrics import better, delta_sign, format_delta, format_value, metric_kind

    # declared by the evaluations (a prefix guess got the first two wrong: "params.*", "latency.*")
    assert better("params.reduction") == "max" and format_value("params.reduction", 2) == "2.00x"
    assert better("latency.cpu_threads") is None and format_value("latency.cpu_threads", 4) == "4"
    assert better("latency.onnxruntime.cpu_ms.b64") == "min" and metric_kind("latency.cpu_ms.b1") == "ms"
    assert better("acc.apgd-t_linf_0.0314") == "max" and producer("acc.worst_l2_0.5") == "adversarial"
    assert better("err.fog.3") == "min" and format_delta("err.fog.3", 0.3, 0.2) == "+10.00 pts"
    assert better("size.bytes_dense") is None and better("size.bytes_compressed") == "min"
    assert delta_sign("mce", 90.0, 100.0) == 1 and metric_kind("ce.fog") == "score"
    # metrics no evaluation declares: naming conventions, else nothing is guessed
    assert metric_info("acc.val").better == "higher" and producer("acc.val") is None
    assert metric_info("train.epochs") is None and better("train.epochs") is None
    assert format_value("train.epochs", 3) == "3" and delta_sign("train.epochs", 3, 2) == 0


def test_a_new_evaluation_declares_how_the_report_reads_its_metrics():
    from robustcompress.evaluation import EVALUATIONS, EvalConfig, MetricSpec, register_evaluation
    from robustcompress.report.metrics import better, delta_sign, format_value

    specs = [MetricSpec("cert.smooth.*.r*", "accuracy", "higher", "fraction", "certified accuracy")]
    assert better("cert.smooth.linf.r0.5") is None
    register_evaluation("test-cert", EvalConfig, metrics=specs, needs="parent")(lambda m, c, x: {})
    try:
        assert EVALUATIONS.get("test-cert").needs == {"parent"}
        assert better("cert.smooth.linf.r0.5") == "max"
        assert format_value("cert.smooth.linf.r0.5", 0.5) == "50.00%"
        assert delta_sign("cert.smooth.linf.r0.5", 0.4, 0.5) == -1
    finally:
        EVALUATIONS._items.pop("test-cert")
    with pytest.raises(ValueError, match="better must be"):
        MetricSpec("x", "count", "max")
    with pytest.raises(ValueError, match="unknown context"):
        register_evaluation("test-bad", EvalConfig, needs="data")
