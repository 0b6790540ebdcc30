"""The rcz file: lossless codecs, round trips of compressed models, sizes, export, presets."""

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.compression.format import load_compressed, save_compressed
from robustcompress.compression.format.codec import decode_array, encode_array, huffman_decode, huffman_encode
from robustcompress.compression.presets import PAPER000, PRESETS, preset_stages
from robustcompress.errors import CheckpointError
from robustcompress.evaluation.clean import predict
from robustcompress.evaluation.registry import EvalContext
from robustcompress.evaluation.size import SizeConfig, checkpoint_bytes, evaluate_size
from robustcompress.stages import STAGES
from tests.test_quant_helpers import run_stage, small_splits, zero_smallest


@pytest.fixture(scope="module")
def data(trained_cnn8):
    return small_splits(trained_cnn8[1], train=256, test=200)


@pytest.fixture(scope="module")
def pcq(trained_cnn8, data):
    """A pruned (70%), clustered (16), 8-bit fake-quantized cnn8 (PCQAT without training)."""
    clustered = run_stage(zero_smallest(trained_cnn8[0], 0.7), data, "cluster", clusters=16)
    return run_stage(clustered, data, "qat", bits=8, epochs=0)


def test_huffman_round_trip_and_beats_fixed_width_on_skewed_symbols():
    rng = np.random.default_rng(0)
    symbols = rng.choice(16, size=20000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    data = huffman_encode(symbols, 16)
    assert np.array_equal(huffman_decode(data, 16, len(symbols)), symbols)
    assert len(data) < len(symbols) * 4 / 8


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(1).normal(size=(32, 16, 3, 3)).astype(np.float32),
        (np.random.default_rng(2).normal(size=5000) * (np.random.default_rng(3).random(5000) > 0.9)).astype(
            np.float32
        ),
        np.random.default_rng(4).integers(-127, 128, size=(64, 100)).astype(np.int8),
        np.random.default_rng(5).integers(0, 17, size=(10, 9)).astype(np.int64),
        np.arange(5, dtype=np.int32),
        np.zeros((0,), dtype=np.float32),
    ],
)
def test_tensor_codec_is_lossless(array):
    head, payloads = encode_array(array)
    out = decode_array(head, payloads)
    assert out.dtype == array.dtype and out.shape == array.shape and np.array_equal(out, array)


def test_pcqat_file_round_trips_and_is_small(pcq, data, tmp_path):
    size = save_compressed(pcq, tmp_path / "m.rcz")
    loaded = load_compressed(tmp_path / "m.rcz")
    x = data.test.x[:64]
    with torch.no_grad():
        assert (loaded(x) - pcq(x)).abs().max().item() < 1e-5
    fp32_weights = 4 * sum(
        m.weight.numel() for m in loaded.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    )
    assert size * 15 < fp32_weights


def test_int8_file_round_trips(pcq, data, tmp_path):
    real = run_stage(copy.deepcopy(pcq), data, "int8", calibration_images=128)
    save_compressed(real, tmp_path / "q.rcz")
    loaded = load_compressed(tmp_path / "q.rcz")
    x = data.test.x[:32]
    assert torch.equal(loaded(x), real(x))


def test_corrupt_files_are_refused(pcq, tmp_path):
    path = tmp_path / "m.rcz"
    save_compressed(pcq, path)
    raw = path.read_bytes()
    (tmp_path / "short.rcz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_compressed(tmp_path / "short.rcz")
    (tmp_path / "bad.rcz").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(CheckpointError, match="not an rcz file"):
        load_compressed(tmp_path / "bad.rcz")


def test_size_evaluation_reports_real_ratios(trained_cnn8, pcq, data):
    model = trained_cnn8[0]
    ctx = EvalContext(data=data, device=torch.device("cpu"), parent=model)
    metrics = evaluate_size(pcq, SizeConfig(), ctx)
    assert metrics["size.bytes_dense"] == len(checkpoint_bytes(model))
    assert metrics["size.ratio"] == pytest.approx(
        metrics["size.bytes_dense"] / metrics["size.bytes_compressed"]
    )
    assert metrics["size.ratio"] > 15 and metrics["size.ratio_gzip"] > 1
    assert metrics["size.bytes_paper002"] < metrics["size.bytes_dense"] / 4
    # paper 002 Eq. 7 with 16 clusters (n = 4 bits) of one codebook per layer, over every layer:
    # (2^n codebook entries x 32 bits + n bits per weight) / 32 bits per weight
    sizes = [m.weight.numel() for m in pcq.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    expected = (len(sizes) * 2**4 * 32 + 4 * sum(sizes)) / (32 * sum(sizes))
    assert metrics["size.rate_eq7"] == pytest.approx(expected)
    dense_metrics = evaluate_size(model, SizeConfig(), ctx)
    assert dense_metrics["size.ratio"] < 1.2 and dense_metrics["size.rate_eq7"] == 1.0


def test_export_cli_writes_rcz_and_int8(trained_cnn8, data_root, tmp_path):
    from robustcompress.cli import main

    save_checkpoint(tmp_path / "ck", trained_cnn8[0], {"data": {"dataset": "fashion-mnist"}})
    runner = CliRunner()
    res = runner.invoke(
        main, ["export", str(tmp_path / "ck"), "--format", "rcz", "--out", str(tmp_path / "m.rcz"), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["bytes"] == (tmp_path / "m.rcz").stat().st_size
    res = runner.invoke(
        main,
        [
            "export",
            str(tmp_path / "ck"),
            "--format",
            "int8",
            "--out",
            str(tmp_path / "q"),
            "--data-root",
            str(data_root),
            "--calibration-images",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    int8, _ = load_checkpoint(tmp_path / "q")
    assert int8.onnx_bytes() == (tmp_path / "q" / "model.onnx").read_bytes()
    x = trained_cnn8[1].test.x[:200]
    agree = (predict(int8, x) == predict(trained_cnn8[0], x)).float().mean().item()
    assert agree > 0.9, f"the int8 export agrees with the float model on only {agree:.0%} of the images"
    res = runner.invoke(
        main, ["export", str(tmp_path / "nope"), "--format", "rcz", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "does not exist" in res.output


def test_presets_hold_paper000s_16_configurations():
    assert len(PAPER000) == 16 and all(name in PRESETS for name in PAPER000)
    for name, stages in PRESETS.items():
        for stage in stages:
            cfg = {k: v for k, v in stage.items() if k != "type"}
            STAGES.get(stage["type"]).config_cls.parse(cfg, where=name)
    quick = preset_stages("pcqat-int8", epochs=1, amount=0.8)
    assert [s["type"] for s in quick] == ["prune", "finetune", "cluster", "qat", "int8"]
    assert quick[0]["amount"] == 0.8 and all(s.get("epochs", 1) == 1 for s in quick)


class _Mask(torch.nn.Module):
    """A pruning mask as the pruning stage makes it: a parametrization w -> w * mask."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def test_masked_weights_are_stored_sparse(trained_cnn8, tmp_path):
    from torch.nn.utils import parametrize

    model = copy.deepcopy(trained_cnn8[0])
    dense = save_compressed(model, tmp_path / "dense.rcz")
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            threshold = m.weight.detach().abs().flatten().kthvalue(int(0.8 * m.weight.numel())).values
            parametrize.register_parametrization(
                m, "weight", _Mask((m.weight.detach().abs() > threshold).float())
            )
    assert save_compressed(model, tmp_path / "masked.rcz") < 0.35 * dense


def test_rcz_bytes_are_the_same_in_memory_and_after_a_checkpoint_round_trip(trained_cnn8, data, tmp_path):
    """A rerun after a kill loads its models from disk: their size must not change (it did, by a few
    bytes, when the header's structure records kept their in-memory key order)."""
    pruned = run_stage(copy.deepcopy(trained_cnn8[0]), data, "prune", method="global", amount=0.5, epochs=0)
    clustered = run_stage(pruned, data, "cluster", clusters=8, preserve_sparsity=True, finetune_epochs=0)
    quantized = run_stage(clustered, data, "qat", bits=8, epochs=0)
    real = run_stage(copy.deepcopy(quantized), data, "int8", calibration_images=64)
    for name, model in {"pruned": pruned, "clustered": clustered, "qat": quantized, "int8": real}.items():
        save_compressed(model, tmp_path / f"{name}.rcz")
        save_checkpoint(tmp_path / name, model)
        save_compressed(load_checkpoint(tmp_path / name)[0], tmp_path / f"{name}-loaded.rcz")
        in_memory, loaded = (
            (tmp_path / f"{name}.rcz").read_bytes(),
            (tmp_path / f"{name}-loaded.rcz").read_bytes(),
        )
        assert in_memory == loaded, name
