"""Checked exports: ONNX Runtime predicts like PyTorch for every checkpoint kind, or nothing is written."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.cli import main
from robustcompress.compression.format import ExportParityError, export_int8_checked, export_onnx_checked
from robustcompress.compression.format.onnx import FLOAT_ATOL, QUANT_ATOL
from robustcompress.compression.pruning import harden, prune_channels, prune_unstructured
from robustcompress.compression.quantization import int8 as int8_module
from robustcompress.compression.quantization.int8 import ort_session
from robustcompress.data import load_dataset
from robustcompress.measure import predict
from robustcompress.training import TrainConfig, fit
from tests.test_quant_helpers import run_stage, small_splits, zero_smallest

META = {"data": {"dataset": "fashion-mnist"}}


@pytest.fixture(scope="module")
def data(trained_cnn8):
    return small_splits(trained_cnn8[1], train=256, test=200)


@pytest.fixture(scope="module")
def channel_pruned(trained_cnn8):
    """cnn8 with half its channels cut out (hardened), fine-tuned one epoch on 1024 images (~65%)."""
    model, splits = copy.deepcopy(trained_cnn8[0]), trained_cnn8[1]
    x = splits.train.x[:1]
    prune_channels(model, 0.5, example_input=x)
    harden(model, example_input=x)
    fit(model, small_splits(splits, train=1024), TrainConfig(epochs=1, lr=0.02), device="cpu", progress=False)
    return model.eval()


def _masked(model):
    model = copy.deepcopy(model)
    prune_unstructured(model, 0.7)
    return model


def _kinds(model, data, channel_pruned):
    return {
        "dense": lambda: copy.deepcopy(model),
        "masked": lambda: _masked(model),
        "channel_pruned": lambda: channel_pruned,
        "clustered": lambda: run_stage(copy.deepcopy(model), data, "cluster", clusters=16),
        "fake_quant": lambda: run_stage(copy.deepcopy(model), data, "ptq", bits=8),
        "pcq": lambda: run_stage(
            run_stage(zero_smallest(model, 0.7), data, "cluster", clusters=16), data, "qat", bits=8, epochs=0
        ),
    }


def _weights(path):
    """The ONNX file's conv / linear weight tensors (4-d or 2-d initializers of more than 64 values)."""
    proto = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in proto.graph.initializer]
    return [a for a in arrays if a.ndim in (2, 4) and a.size > 64]


def _ort_predict(path, x):
    session = ort_session(path.read_bytes(), threads=1)
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0]).argmax(1)


@pytest.mark.parametrize("kind", ["dense", "masked", "channel_pruned", "clustered", "fake_quant", "pcq"])
def test_onnx_export_predicts_like_the_model_for_every_kind(
    trained_cnn8, data, channel_pruned, kind, tmp_path
):
    model = _kinds(trained_cnn8[0], data, channel_pruned)[kind]()
    path = tmp_path / "m.onnx"
    report = export_onnx_checked(model, data.train.x[:64], path, latency_runs=2)
    assert report.parity.ok and report.parity.images == report.parity.argmax_agree == 64
    with torch.no_grad():
        scale = max(1.0, model(data.train.x[:64]).abs().max().item())
    atol = QUANT_ATOL if kind in ("fake_quant", "pcq") else FLOAT_ATOL
    assert report.parity.tolerance == pytest.approx(atol * scale)
    assert report.bytes == path.stat().st_size and report.latency_batch_size == 64
    assert report.latency_ms_batch1 > 0 and report.latency_ms_batch > report.latency_ms_batch1
    assert list(tmp_path.iterdir()) == [path]
    # independently of the checker: the file gives the model's class on every test image
    assert torch.equal(_ort_predict(path, data.test.x), predict(model, data.test.x))
    # the compression is baked into the file's weights
    weights = _weights(path)
    assert len(weights) == 8  # six convolutions, two linear layers
    if kind in ("masked", "pcq"):
        zeros = sum(int((w == 0).sum()) for w in weights)
        assert zeros >= 0.69 * sum(w.size for w in weights)
    if kind in ("clustered", "pcq"):  # per output channel: the exporter folds batch norm into convs
        assert all(len(np.unique(row[row != 0])) <= 16 for w in weights for row in w.reshape(len(w), -1))
    if kind == "fake_quant":
        assert all(len(np.unique(row)) <= 255 for w in weights for row in w.reshape(len(w), -1))
    if kind == "channel_pruned":
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [w.shape for w in weights if w.ndim == 4] == [tuple(c.weight.shape) for c in convs]


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_channel_pruned_onnx_is_smaller_and_as_accurate_as_evaluate_says(
    trained_cnn8, channel_pruned, data_root, tmp_path
):
    save_checkpoint(tmp_path / "dense", trained_cnn8[0], META)
    save_checkpoint(tmp_path / "pruned", channel_pruned, META)
    sizes = {}
    for name in ("dense", "pruned"):
        res = _export(
            tmp_path / name, "--format", "onnx", "--out", tmp_path / f"{name}.onnx",
            "--data-root", data_root, "--calibration-images", 64, "--latency-runs", 2, "--json",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        report = json.loads(res.output.strip().splitlines()[-1])
        assert report["bytes"] == (tmp_path / f"{name}.onnx").stat().st_size
        assert report["parity_images"] == report["parity_argmax_agree"] == 64 and report["parity_ok"]
        assert report["parity_max_abs_diff"] <= report["parity_tolerance"]
        assert report["latency_ms_batch1"] > 0 and report["latency_batch_size"] == 64
        sizes[name] = report["bytes"]
    assert sizes["pruned"] < 0.5 * sizes["dense"]

    args = ["--data-root", str(data_root), "--limit-train", "64", "--limit-test", "500"]
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pruned"), *args, "--json"])
    assert res.exit_code == 0, res.output
    evaluated = json.loads(res.output.strip().splitlines()[-1])["acc.clean"]
    test = load_dataset("fashion-mnist", root=data_root, limit_train=64, limit_test=500).test
    assert len(test) == 500
    onnx_acc = (_ort_predict(tmp_path / "pruned.onnx", test.x) == test.y).float().mean().item()
    assert onnx_acc == evaluated and evaluated > 0.4  # a working model, not one constant class


def _wrong_exporter(change):
    """An exporter that translates the classifier wrongly (the kind of bug the check must catch)."""
    real = int8_module.export_onnx

    def export(model, example, exporter="torchscript"):
        model = copy.deepcopy(model)
        change(model.net.classifier[-1].bias)
        return real(model, example, exporter)

    return export


@pytest.mark.parametrize(
    ("change", "agree"),
    [
        (lambda b: b.data.__setitem__(0, b.data[0] + 100.0), False),  # every image becomes class 0
        (lambda b: b.data.add_(0.05), True),  # same classes, logits off by 0.05
    ],
)
def test_a_wrong_export_fails_and_leaves_nothing(
    trained_cnn8, data_root, tmp_path, monkeypatch, change, agree
):
    save_checkpoint(tmp_path / "ck", trained_cnn8[0], META)
    monkeypatch.setattr(int8_module, "export_onnx", _wrong_exporter(change))
    res = _export(
        tmp_path / "ck", "--format", "onnx", "--out", tmp_path / "m.onnx",
        "--data-root", data_root, "--calibration-images", 32,
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "does not predict like the model" in res.output and "nothing was written" in res.output
    if agree:
        assert "0 of 32 calibration images get another class, max |logit difference| 0.05" in res.output
    else:
        assert "of 32 calibration images get another class" in res.output and " 0 of 32" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_an_existing_file_is_kept_when_the_export_fails(trained_cnn8, data, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous export")
    monkeypatch.setattr(int8_module, "export_onnx", _wrong_exporter(lambda b: b.data.add_(1.0)))
    with pytest.raises(ExportParityError, match="max \\|logit difference\\| 1 "):
        export_onnx_checked(trained_cnn8[0], data.train.x[:16], path)
    assert path.read_bytes() == b"previous export" and list(tmp_path.iterdir()) == [path]


def test_int8_export_is_checked_and_reports_agreement_with_the_float_model(trained_cnn8, data_root, tmp_path):
    model = trained_cnn8[0]
    save_checkpoint(tmp_path / "ck", model, META)
    res = _export(
        tmp_path / "ck", "--format", "int8", "--out", tmp_path / "q",
        "--data-root", data_root, "--calibration-images", 64, "--latency-runs", 2, "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    assert report["format"] == "int8" and report["parity_ok"]
    assert report["parity_images"] == report["parity_argmax_agree"] == 64
    assert report["bytes"] == (tmp_path / "q" / "model.safetensors").stat().st_size
    assert report["onnx_bytes"] == (tmp_path / "q" / "model.onnx").stat().st_size
    assert report["bytes_checkpoint"] > 3 * report["bytes"]  # int8 weights, not fp32
    assert 58 <= report["float_argmax_agree"] <= 64  # int8 rounding may flip a near tie
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "q"]
    # the written file predicts what the reloaded checkpoint predicts, on unseen images
    qmodel, _ = load_checkpoint(tmp_path / "q")
    test = trained_cnn8[1].test.x[:100]
    assert torch.equal(_ort_predict(tmp_path / "q" / "model.onnx", test), predict(qmodel, test))
    # an int8 checkpoint exports again, as it is
    again = export_int8_checked(qmodel, test[:16], tmp_path / "q2", latency_runs=1)
    assert (
        again.parity.ok
        and (tmp_path / "q2" / "model.onnx").read_bytes() == (tmp_path / "q" / "model.onnx").read_bytes()
    )


def test_a_wrong_int8_file_fails_and_leaves_nothing(trained_cnn8, data, tmp_path, monkeypatch):
    import robustcompress.checkpoint as checkpoint_module

    real_save = checkpoint_module.save_checkpoint

    def save_with_a_float_graph(directory, model, meta=None, extra_files=None):
        wrong = int8_module.export_onnx(copy.deepcopy(trained_cnn8[0]).eval(), data.train.x[:2])
        return real_save(directory, model, meta, {**(extra_files or {}), "model.onnx": wrong})

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_with_a_float_graph)
    with pytest.raises(ExportParityError, match="model.onnx: .* max \\|logit difference\\|"):
        export_int8_checked(trained_cnn8[0], data.train.x[:32], tmp_path / "q")
    assert list(tmp_path.iterdir()) == []
