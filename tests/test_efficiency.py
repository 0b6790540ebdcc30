"""Efficiency report: parameter, non-zero and MAC counts, latency, per-layer sparsity table and plot."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robustcompress.compression.pruning import harden, prune_channels, prune_unstructured
from robustcompress.errors import ConfigError
from robustcompress.evaluation import EVALUATIONS, EvalContext
from robustcompress.evaluation.efficiency import (
    count_macs,
    count_params,
    deployed,
    layer_sparsity,
    measure_latency,
    plot_layer_sparsity,
    sparsity,
    sparsity_table,
)
from robustcompress.evaluation.registry import producer
from robustcompress.models import build_model


def test_macs_of_known_layers_and_of_resnet18():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(800, 10))
    assert count_macs(net, torch.rand(1, 3, 10, 10)) == (8 * 3 * 9 * 100 + 800 * 10,) * 2
    grouped = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(grouped, torch.rand(1, 8, 4, 4))[0] == 8 * 9 * 16
    # CIFAR ResNet-18: 0.56 GMACs; 555.4M in conv + linear layers (thop's 556.7M adds batch norm and ReLU)
    macs, _ = count_macs(build_model("resnet18").eval(), torch.rand(1, 3, 32, 32))
    assert abs(macs / 1e6 - 555.42) < 0.01


def test_counts_of_masked_and_hardened_models():
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.5)
    params, nonzero = count_params(model)
    assert params == sum(p.numel() for p in model.parameters()) and nonzero <= params  # biases start at 0
    prune_unstructured(model, 0.75, "layerwise")
    masked_params, masked_nonzero = count_params(model)
    assert masked_params == params  # masks are buffers, not parameters
    assert sparsity(model) == pytest.approx(0.75, abs=1e-4)
    assert masked_nonzero < 0.3 * params
    macs, macs_nonzero = count_macs(model, torch.rand(1, 1, 28, 28))
    assert macs_nonzero == pytest.approx(0.25 * macs, rel=1e-3)

    x = torch.rand(1, 1, 28, 28)
    small = build_model("cnn8", in_channels=1, input_size=28, width=0.5).eval()
    dense_macs, _ = count_macs(small, x)
    prune_channels(small, 0.5, example_input=x)
    harden(small, example_input=x)
    hard_macs, hard_nonzero_macs = count_macs(small, x)
    assert (
        hard_macs == hard_nonzero_macs and 3.5 < dense_macs / hard_macs < 4.1
    )  # both sides of each conv halve


def test_latency_and_the_efficiency_evaluation(tmp_path):
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    assert measure_latency(model, (1, 28, 28), batch_size=2, repeats=3, warmup=1) > 0
    pruned = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    prune_unstructured(pruned, 0.5, "layerwise")
    data = SimpleNamespace(test=SimpleNamespace(x=torch.rand(8, 1, 28, 28)))
    ev = EVALUATIONS.get("efficiency")
    cfg = ev.config_cls.parse({"batch_sizes": [1, 4], "repeats": 2, "warmup": 1, "threads": 1})
    ctx = EvalContext(data=data, device=torch.device("cpu"), parent=model, workdir=tmp_path)
    metrics = ev.run(pruned, cfg, ctx)
    for key in ("params", "params.nonzero", "sparsity", "macs", "latency.cpu_ms.b1", "latency.cpu_ms.b4"):
        assert key in metrics, key
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert metrics["latency.cpu_threads"] == 1 and metrics["macs.reduction"] == 1.0
    assert {producer(k) for k in metrics} == {"efficiency"}  # every metric declared by the evaluation
    assert (tmp_path / "layer_sparsity.md").read_text().count("\n") == 2 + len(layer_sparsity(pruned))
    assert (tmp_path / "layer_sparsity.png").stat().st_size > 1000


def test_sparsity_table_and_plot_compare_global_and_layerwise(tmp_path):
    rows = {}
    for method in ("global", "layerwise"):
        model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
        prune_unstructured(model, 0.8, method)
        rows[method] = layer_sparsity(model)
    table = sparsity_table(rows)
    assert "| layer | type | weights | global | layerwise |" in table
    assert all(abs(r["sparsity"] - 0.8) < 0.01 for r in rows["layerwise"])
    path = plot_layer_sparsity(rows, tmp_path / "img" / "sparsity.png")
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_deployment_runtimes_run_the_same_model_and_report_their_latency(runtime):
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25).eval()
    prune_unstructured(model, 0.5, "global")  # masks are baked into the deployed copy
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 28, 28)
    run = deployed(model, runtime, x)
    with torch.inference_mode():
        expected, out = model(x), run(x)
    got = torch.as_tensor(out[0]) if runtime == "onnxruntime" else out  # ONNX Runtime returns numpy arrays
    assert torch.allclose(got, expected, atol=1e-4)
    data = SimpleNamespace(test=SimpleNamespace(x=x))
    ev = EVALUATIONS.get("efficiency")
    cfg = ev.config_cls.parse({"batch_sizes": [2], "repeats": 2, "warmup": 1, "runtimes": ["eager", runtime]})
    metrics = ev.run(model, cfg, EvalContext(data=data, device=torch.device("cpu")))
    assert metrics["latency.cpu_ms.b2"] > 0 and metrics[f"latency.{runtime}.cpu_ms.b2"] > 0
    with pytest.raises(ConfigError, match="runtimes"):
        ev.config_cls.parse({"runtimes": ["tvm"]})
