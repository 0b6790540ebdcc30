import base64
import io
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
from tests.tiny_study import tiny_config

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
    path = tiny_config(
        tmp,
        data_root,
        """
[[evaluations]]
type = "clean"
[[evaluations]]
type = "analysis"
n_images = 3
n_random = 2
n_sections = 1
section_resolution = 9
pca_images = 40
pca_resolution = 8
steps = 2
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "tuned"
stages = [{type = "finetune", epochs = 1}]
""",
        name="tiny",
        limit_train=300,
        limit_test=100,
    )
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
    assert markdown[1].startswith("| --- | ---: |") and markdown[2 + 5] == ""  # then the notes
    assert markdown[-1] == table.notes[-1] and table.notes == [
        "acc.clean: measured on 100 test images (baseline, tuned)"
    ]
    text = table.text().splitlines()
    assert text[0].split() == ["model", "pareto", "acc.clean", "mce", "size.ratio", "flags"]
    assert len({len(line) for line in text[: 2 + 5]}) == 1  # aligned
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

    specs = [MetricSpec("probe.smooth.*.r*", "accuracy", "higher", "fraction", "certified accuracy")]
    assert better("probe.smooth.linf.r0.5") is None
    register_evaluation("test-cert", EvalConfig, metrics=specs, needs="parent")(lambda m, c, x: {})
    try:
        assert EVALUATIONS.get("test-cert").needs == {"parent"}
        assert better("probe.smooth.linf.r0.5") == "max"
        assert format_value("probe.smooth.linf.r0.5", 0.5) == "50.00%"
        assert delta_sign("probe.smooth.linf.r0.5", 0.4, 0.5) == -1
    finally:
        EVALUATIONS._items.pop("test-cert")
    with pytest.raises(ValueError, match="better must be"):
        MetricSpec("x", "count", "max")
    with pytest.raises(ValueError, match="unknown context"):
        register_evaluation("test-bad", EvalConfig, needs="data")


# ---- the report a person reads: summary, flagged figures, what each number was measured on ----

ADV_EVAL = {"type": "adversarial", "attacks": ["pgd"], "eps": [0.1], "steps": 10, "n_examples": 50}


@pytest.fixture(scope="module")
def flagged_study(study, tmp_path_factory):
    """The study plus an int8 model whose high robust accuracy carries a masking flag."""
    src, base = study
    folder = tmp_path_factory.mktemp("flagged")
    shutil.copy(src / "results.sqlite", folder / "results.sqlite")
    store = ResultsStore(folder / "results.sqlite")
    art = next(iter(load_results(folder).comparison_rows())).artifact
    config = {
        "name": "tiny/int8-masked",
        "data": {"dataset": "fashion-mnist", "limit_test": 100},
        "model": {"name": "cnn8", "width": 0.25},
        "evaluations": [{"type": "clean"}, ADV_EVAL],
        "stages": [{"type": "int8"}],
    }
    store.add_experiment("tiny/int8-masked", config)
    store.add_metrics("tiny/int8-masked", "baseline", art, "clean", {"acc.clean": base["acc.clean"]})
    final = {
        "acc.clean": base["acc.clean"] - 0.01,
        "acc.pgd_linf_0.1": 0.476,  # the best robust accuracy of all, but only measured by transfer
        "acc.worst_linf_0.1": 0.476,
        "adv.n_examples": 50,
        "adv.clean_acc": 0.6,
        "flag.nondifferentiable": "no input gradients: only transfer and score-based attacks ran",
        "size.ratio": 4.0,
    }
    store.add_metrics("tiny/int8-masked", "final", "int8-art", "all", final)
    return folder


def test_flagged_figures_are_marked_and_kept_off_fronts_and_best(flagged_study):
    results = load_results(flagged_study)
    goals = [ACC, ("acc.pgd_linf_0.1", "max")]
    table = comparison_table(results, ["acc.clean", "acc.pgd_linf_0.1"], objectives=goals)
    cells = {row[0].text: row for row in table.rows}
    masked = cells["int8-masked"]
    assert masked[3].text == "47.60%\u2020" and masked[3].flagged and masked[3].sign == 0  # not green
    assert not masked[2].flagged  # its clean accuracy was not measured under the flag
    assert masked[1].text == ""  # off the front: its robust figure cannot be trusted
    assert cells["prune50"][1].text == "yes"  # 30% PGD is now the best trusted robust accuracy
    assert any(n.startswith("\u2020 measured by an evaluation that raised") for n in table.notes)
    assert (
        "acc.pgd_linf_0.1: measured on 50 test images; L-inf eps 0.1; pgd (10 steps) (int8-masked)"
        in " ".join(table.notes)
    )
    # the user may let them compete: still marked, now on the front
    table = comparison_table(
        results, ["acc.clean", "acc.pgd_linf_0.1"], objectives=goals, include_flagged=True
    )
    masked = next(row for row in table.rows if row[0].text == "int8-masked")
    assert masked[1].text == "yes" and masked[3].flagged

    html = write_report(flagged_study, flagged_study / "r.html", objectives=goals).read_text()
    summary = html[html.index("<h2>Summary</h2>") : html.index("</section>")]
    best = re.search(r"<td>acc.pgd_linf_0.1 \(higher is better\)</td><td>(.*?)</td><td>(.*?)</td>", summary)
    assert best.groups() == ("prune50", "30.00%")
    assert "Pareto set" in summary and "int8-masked" not in summary.split("Pareto set")[1].split("</p>")[0]
    assert "int8-masked: flag.nondifferentiable" in summary
    front = html[html.index("<h2>Pareto front</h2>") : html.index("<h2>Plots</h2>")]
    assert "<li>int8-masked</li>" not in front
    loose = write_report(flagged_study, flagged_study / "r2.html", objectives=goals, include_flagged=True)
    loose = loose.read_text()
    assert (
        "<li>int8-masked</li>" in loose[loose.index("<h2>Pareto front</h2>") : loose.index("<h2>Plots</h2>")]
    )
    assert re.search(r"<td>acc.pgd_linf_0.1 \(higher is better\)</td><td>int8-masked</td>", loose)


def test_cli_report_include_flagged_and_objectives(flagged_study, tmp_path):
    args = [
        "report",
        str(flagged_study),
        "--out",
        str(tmp_path / "r.html"),
        "--columns",
        "acc.clean,acc.pgd_*",
    ]
    goals = ["--objectives", "acc.clean,acc.pgd_linf_0.1"]
    strict = CliRunner().invoke(main, args + goals)
    assert strict.exit_code == 0, strict.output
    row = next(line for line in strict.output.splitlines() if line.startswith("int8-masked"))
    assert row.split()[1].endswith("%") and "yes" not in row and "47.60%\u2020" in row  # no pareto mark
    loose = CliRunner().invoke(main, args + goals + ["--include-flagged"])
    row = next(line for line in loose.output.splitlines() if line.startswith("int8-masked"))
    assert row.split()[1] == "yes" and "47.60%\u2020" in row
    bad = CliRunner().invoke(main, args + ["--objectives", "train.epochs"])
    assert bad.exit_code == 2 and "say max or min" in bad.output


def _structure_ok(html: str) -> int:
    """Every image decodes as PNG, every table has a header row, nothing external; returns #images."""
    from html.parser import HTMLParser
    from io import BytesIO

    from PIL import Image

    class Parser(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.tables, self.links, self.stack = [], [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.images.append(a.get("src", ""))
            if tag == "table":
                self.tables.append({"thead": False, "th": 0})
            if tag == "thead" and self.tables:
                self.tables[-1]["thead"] = True
            if tag == "th" and self.tables:
                self.tables[-1]["th"] += 1
            for key in ("src", "href"):
                if key in a and not (a[key].startswith("data:") or a[key].startswith("#")):
                    self.links.append(a[key])
            if tag in ("link", "script", "iframe", "object", "embed"):
                self.links.append(tag)

    p = Parser()
    p.feed(html)
    assert not p.links and "url(" not in html and "@import" not in html
    assert p.tables and all(t["thead"] and t["th"] for t in p.tables)
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        img.load()
        assert img.width > 100 and img.height > 100
    return len(p.images)


def test_report_structure_summary_first_and_analysis_figures(real_run, flagged_study):
    out, _ = real_run
    html = write_report(out).read_text()
    assert html.index("<h2>Summary</h2>") < html.index("<h2>Comparison</h2>")
    assert "cnn8 (width 0.25) on fashion-mnist (100 test images)" in html
    # the analysis evaluation's figures, found in each experiment's run folder, are embedded
    written = sorted((out / "tiny_plain" / "analysis").glob("*.png"))
    assert {p.stem.split("-", 1)[1] for p in written} == {"boundary-pca", "boundary-sections"}
    section = html[html.index("<h2>Analysis figures</h2>") : html.index("<h2>Experiments</h2>")]
    embedded = PNG_DATA.findall(section)
    assert base64.b64encode(written[0].read_bytes()).decode() in embedded
    assert "Decision regions in the plane of the first two principal components" in section
    assert _structure_ok(html) == len(embedded) >= 4  # both experiments' figures
    flagged = write_report(flagged_study, flagged_study / "s.html").read_text()
    assert _structure_ok(flagged) == 3


# ---- certified accuracy vs radius (randomized smoothing) -----------------------------------


def _cert_rows():
    from robustcompress.report.results import ModelRow

    def row(label, r0, r05, cap=0.9, extra=None):
        m = {"acc.clean": r0 + 0.05, "cert.smooth.n": 1000, "cert.smooth.s0.25.radius_cap": cap}
        m |= {"cert.smooth.s0.25.r0": r0, "cert.smooth.s0.25.r0.5": r05} | (extra or {})
        return ModelRow("e", "final", f"{label}-art", m, label=label)

    return [
        row("base", 0.8, 0.5),
        row("pruned", 0.7, 0.3),
        ModelRow("f", "final", "x", {"acc.clean": 0.9}, "plain"),
    ]


def test_certified_plot_one_curve_per_model_from_the_metric_names():
    from PIL import Image

    from robustcompress.report.plots import certified_curves

    rows = _cert_rows()
    curves = certified_curves(rows)
    assert {k: [(x, y) for x, y, _ in v] for k, v in curves.items()} == {
        ("0.25", "base"): [(0.0, 0.8), (0.5, 0.5)],  # radius_cap and .n are not points of a curve
        ("0.25", "pruned"): [(0.0, 0.7), (0.5, 0.3)],
    }
    plots = {p.name: p for p in make_plots(rows)}
    plot = plots["certified_vs_radius"]
    assert plot.skipped is None and set(plot.metrics) == {"cert.smooth.s0.25.r0", "cert.smooth.s0.25.r0.5"}
    image = Image.open(io.BytesIO(plot.png))
    image.load()
    assert image.format == "PNG" and image.size == (704, 484)  # 6.4 x 4.4 in at 110 dpi: one sigma
    # a second sigma is a second panel (wider figure), on one of the models only
    rows[0].metrics |= {
        "cert.smooth.s0.5.r0": 0.6,
        "cert.smooth.s0.5.r1": 0.2,
        "cert.smooth.s0.5.radius_cap": 1.8,
    }
    two = next(p for p in make_plots(rows) if p.name == "certified_vs_radius")
    assert Image.open(io.BytesIO(two.png)).size == (880, 484)
    assert ("0.5", "base") in certified_curves(rows) and ("0.5", "pruned") not in certified_curves(rows)
    # no certified metrics: no plot at all (not even a skipped one)
    names = [p.name for p in make_plots(rows[2:])]
    assert names == ["accuracy_vs_ratio", "robust_vs_clean", "mce_vs_ratio"]


def test_certified_plot_is_embedded_in_the_html_report(study, tmp_path):
    src, base = study
    shutil.copy(src / "results.sqlite", tmp_path / "results.sqlite")
    store = ResultsStore(tmp_path / "results.sqlite")
    art = next(iter(load_results(tmp_path).comparison_rows())).artifact
    cert = {"type": "certified", "method": "smoothing", "sigma": 0.25, "radii": [0, 0.5], "n_examples": 20}
    config = {
        "name": "tiny/cert",
        "data": {"dataset": "fashion-mnist", "limit_test": 100},
        "evaluations": [cert],
    }
    store.add_experiment("tiny/cert", config)
    store.add_metrics("tiny/cert", "baseline", art, "clean", {"acc.clean": base["acc.clean"]})
    final = {
        "acc.clean": base["acc.clean"],
        "cert.smooth.s0.25.r0": 0.55,
        "cert.smooth.s0.25.r0.5": 0.25,
        "cert.smooth.s0.25.radius_cap": 0.77,
        "cert.smooth.n": 1000,
    }
    store.add_metrics("tiny/cert", "final", "cert-art", "certified", final)
    html = write_report(tmp_path, tmp_path / "r.html").read_text()
    figure = re.search(
        r"<figure><img alt=\"Certified accuracy vs L2 radius[^\"]*\" src=\"(.*?)\">(.*?)</figure>", html
    )
    assert figure is not None
    png = base64.b64decode(figure.group(1).removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert "cert.smooth.s0.25.r0, cert.smooth.s0.25.r0.5: measured on 20 test images" in figure.group(2)
    assert len(PNG_DATA.findall(html)) == 4  # the three study plots and this one


def test_summary_counts_models_at_or_better_than_their_own_baseline(tmp_path):
    """Paper 000's headline: the share of compressed models whose mCE is at or below their baseline's."""
    from robustcompress.report.html import against_baseline
    from robustcompress.report.results import ModelRow, Results

    rows = [
        ModelRow("a", "baseline", "b1", {"mce": 100.0, "acc.clean": 0.9}),
        ModelRow("a", "final", "f1", {"mce": 95.0, "acc.clean": 0.8}),
        ModelRow("b", "baseline", "b1", {"mce": 100.0, "acc.clean": 0.9}),
        ModelRow("b", "final", "f2", {"mce": 100.0, "acc.clean": 0.95}),
        ModelRow("c", "baseline", "b2", {"mce": 100.0, "acc.clean": 0.7}),
        ModelRow("c", "final", "f3", {"mce": 130.0, "acc.clean": 0.6}),
        ModelRow("d", "baseline", "b2", {"mce": 100.0}),
        ModelRow("d", "final", "b2", {"mce": 100.0}),  # no stages: the baseline itself, not counted
    ]
    objectives = [("mce", "min"), ("acc.clean", "max"), ("size.ratio", "max")]
    got = against_baseline(Results(tmp_path, rows), objectives)
    assert got == [("mce", 2, 3), ("acc.clean", 1, 3)]
