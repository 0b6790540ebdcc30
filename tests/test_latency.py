"""Interleaved latency: rotation order, ranking, the flag, and the study's latency phase."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from robustcompress.evaluation.latency import compared_latency, measure_interleaved
from robustcompress.evaluation.registry import metric_info, producer
from robustcompress.experiments.config import expand_grid, load_config
from robustcompress.experiments.latency_phase import latency_settings, phase_key
from robustcompress.experiments.pipeline import evaluation_key
from robustcompress.experiments.runner import run_experiments
from robustcompress.experiments.store import RESULTS_DB, ResultsStore
from robustcompress.report.provenance import flag_summary, flagged_metrics
from robustcompress.report.results import ModelRow, Results
from robustcompress.report.tables import comparison_table
from tests.tiny_study import tiny_config


class Recorder(nn.Module):
    """Appends its name (and whether it ran in eval mode) to a shared list on every call."""

    def __init__(self, name: str, calls: list):
        super().__init__()
        self.name, self.calls = name, calls

    def forward(self, x):
        self.calls.append((self.name, self.training))
        return x


class Work(nn.Module):
    """`times` passes through one linear layer: cost proportional to `times`."""

    def __init__(self, times: int):
        super().__init__()
        self.times = times
        self.lin = nn.Linear(256, 256)

    def forward(self, x):
        for _ in range(self.times):
            x = self.lin(x)
        return x


def test_each_round_times_every_model_once_in_a_rotated_order_in_eval_mode():
    calls: list = []
    models = {n: Recorder(n, calls) for n in "abc"}
    stats = measure_interleaved(models, torch.zeros(1), rounds=4, warmup=1)
    names = [n for n, _ in calls]
    assert names == list("abc" + "abc" + "bca" + "cab" + "abc")  # warm-up, then rounds 0..3
    assert not any(training for _, training in calls)
    assert all(m.training for m in models.values())  # the train flag is given back
    assert [s.n for s in stats.values()] == [4, 4, 4]
    assert stats["a"].ratios == (1.0,) * 4  # the reference divided by itself


def test_a_five_times_costlier_model_ranks_slower_with_its_ratio_and_no_flag():
    torch.manual_seed(0)
    cheap, costly = Work(1), Work(5)
    costly.lin = copy.deepcopy(cheap.lin)
    out = compared_latency(
        {"cheap": cheap, "costly": costly}, (256,), batch_sizes=[64], rounds=15, warmup=2, threads=1,
        reference="cheap",
    )  # fmt: skip
    slow, fast = out["costly"], out["cheap"]
    assert slow["latency.cpu_ms.b64"] > fast["latency.cpu_ms.b64"]
    assert slow["latency.cpu_ms.b64.ratio"] > 2.5  # about 5: the paired ratio is robust to load
    assert fast["latency.cpu_ms.b64.ratio"] == 1.0
    assert "flag.latency.cpu_ms.b64" not in slow
    assert slow["latency.cpu_ms.b64.iqr"] >= 0 and slow["latency.rounds"] == 15
    assert slow["latency.cpu_threads"] == 1


def test_two_identical_models_are_flagged_or_their_ratio_is_one():
    torch.manual_seed(0)
    a = Work(2)
    stats = measure_interleaved({"a": a, "b": copy.deepcopy(a)}, torch.rand(64, 256), rounds=21, warmup=2)
    b = stats["b"]
    assert (not b.rankable) or abs(b.ratio - 1) < 0.15, (b.ratio, b.ratio_quartiles)


def test_latency_metric_names_are_declared_and_a_latency_flag_marks_only_its_figure():
    assert metric_info("latency.cpu_ms.b64.ratio").unit == "x"
    assert metric_info("latency.torchscript.cpu_ms.b1.iqr").better == "none"
    assert metric_info("latency.cpu_ms.b64").unit == "ms"
    # the efficiency evaluation's, though adversarial (registered first) declares a catch-all flag.*
    assert producer("flag.latency.cpu_ms.b64") == "efficiency"
    assert producer("flag.nondifferentiable") == "adversarial"
    row = ModelRow(
        "e", "final", "k",
        {"macs": 10, "latency.cpu_ms.b64": 3.0, "latency.cpu_ms.b64.ratio": 0.9, "latency.cpu_ms.b1": 1.0,
         "flag.latency.cpu_ms.b64": "cannot rank"},
    )  # fmt: skip
    assert flagged_metrics(row) == {"latency.cpu_ms.b64", "latency.cpu_ms.b64.ratio"}


EFFICIENCY = """
[[evaluations]]
type = "efficiency"
batch_sizes = [1]
repeats = 5
warmup = 1
layer_table = false

[[recipes]]
name = "pruned"
stages = [{type = "prune", amount = 0.5}]
"""


def test_the_study_times_every_evaluated_model_in_its_own_phase_once(tmp_path, data_root):
    cfg = load_config(tiny_config(tmp_path, data_root, EFFICIENCY, limit_train=200, limit_test=50))
    lines: list[str] = []
    [result] = run_experiments(cfg, progress=False, log=lines.append)
    assert sum("latency: timing" in line for line in lines) == 1  # one group: the baseline and its final
    store = ResultsStore(cfg.output + "/" + RESULTS_DB)
    point = expand_grid(cfg)[0]
    [(eff_type, eff_cfg)] = point.validated_evaluations()
    eff_key, key = evaluation_key(eff_type, eff_cfg), phase_key(latency_settings(point))
    for label in ("baseline", "final"):
        artifact = result.artifacts[label].rsplit("/", 1)[-1]
        efficiency = store.get(artifact, eff_key)
        assert "macs" in efficiency and not any(n.startswith("latency.") for n in efficiency)
        phase = store.get(artifact, key)
        assert phase["latency.cpu_ms.b1"] > 0 and phase["latency.rounds"] == 5
        assert result.metrics[label]["latency.cpu_ms.b1"] == phase["latency.cpu_ms.b1"]
    assert store.get(result.artifacts["baseline"].rsplit("/", 1)[-1], key)["latency.cpu_ms.b1.ratio"] == 1.0
    final = store.get(result.artifacts["final"].rsplit("/", 1)[-1], key)
    written = json.loads((result.folder / "metrics.json").read_text())
    assert written["models"]["final"]["latency.cpu_ms.b1"] == final["latency.cpu_ms.b1"]
    assert final["latency.cpu_ms.b1.ratio"] > 0 and "flag.latency.cpu_ms.b1" in final

    lines.clear()
    [again] = run_experiments(cfg, progress=False, log=lines.append)
    assert not any("latency: timing" in line for line in lines)  # stored: nothing is timed again
    assert again.metrics["final"]["latency.cpu_ms.b1"] == final["latency.cpu_ms.b1"]


def test_the_report_shows_the_paired_ratio_as_the_change_and_names_a_latency_flag(tmp_path):
    # medians 10 and 8 ms would read -20%; timed interleaved, the per-round ratio was 0.5
    base = ModelRow("e", "baseline", "a0", {"latency.cpu_ms.b1": 10.0, "latency.cpu_ms.b1.ratio": 1.0})
    final = ModelRow(
        "e", "final", "a1",
        {"latency.cpu_ms.b1": 8.0, "latency.cpu_ms.b1.ratio": 0.5, "flag.latency.cpu_ms.b1": "cannot rank"},
    )  # fmt: skip
    base.label, final.label = "baseline", "e"
    table = comparison_table(Results(tmp_path, [base, final]), ["latency.cpu_ms.b1"])
    [cell] = [c for c in table.rows[1] if c.text.startswith("8")]
    assert cell.delta == "-50.0%" and cell.flagged
    assert "latency not rankable" in " ".join(table.notes)
    assert flag_summary(["flag.latency.cpu_ms.b1", "flag.nondifferentiable"]) == (
        "1 gradient-masking flag(s) and 1 latency flag(s) (not rankable against the baseline)"
    )
