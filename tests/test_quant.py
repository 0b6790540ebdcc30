"""Quantization: levels per channel, observers, BN folding, PCQAT constraints, real int8 agreement."""

import copy

import pytest
import torch
from torch import nn

from robustcompress.capabilities import has_input_gradients, native_onnx, runs_in_torch, stored_tensors
from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.compression.clustering import cluster_layer
from robustcompress.compression.quantization import WeightFakeQuant, fold_batchnorm
from robustcompress.compression.quantization.int8 import Int8Model
from robustcompress.compression.storage import WeightStorage, weight_storage
from robustcompress.errors import ConfigError
from robustcompress.evaluation import accuracy
from robustcompress.evaluation.efficiency import efficiency_metrics
from robustcompress.evaluation.size import paper002_size, plain_weights_bytes
from tests.test_quant_helpers import layers, run_stage, small_splits, zero_smallest


@pytest.fixture(scope="module")
def data(trained_cnn8):
    return small_splits(trained_cnn8[1], train=256, test=200)


@pytest.fixture(scope="module")
def model(trained_cnn8):
    return copy.deepcopy(trained_cnn8[0]).eval()


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_fake_quantized_weights_take_at_most_2_to_bits_levels_per_channel(model, data, bits):
    q = run_stage(copy.deepcopy(model), data, "ptq", bits=bits, calibration_batches=1)
    for name, m in layers(q):
        w = m.weight.detach()
        assert any(isinstance(p, WeightFakeQuant) for p in m.parametrizations.weight)
        for row in w.reshape(w.shape[0], -1):
            assert row.unique().numel() <= 2**bits, name


def test_ptq_int8_keeps_accuracy_and_int2_loses_it(model, data):
    base = accuracy(model, data.test)
    int8 = accuracy(run_stage(copy.deepcopy(model), data, "ptq", bits=8), data.test)
    int2 = accuracy(run_stage(copy.deepcopy(model), data, "ptq", bits=2), data.test)
    assert abs(int8 - base) <= 0.02
    assert int2 < int8


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse"])
def test_observers_calibrate_a_range_around_zero(model, data, observer):
    q = run_stage(copy.deepcopy(model), data, "ptq", bits=8, observer=observer, calibration_batches=2)
    quants = [m.input_quant for _, m in layers(q)]
    assert all(aq.lo <= 0 <= aq.hi and aq.hi > aq.lo for aq in quants)
    few = data.test.subset(range(100))
    assert accuracy(q, few) >= accuracy(model, few) - 0.03


def test_batchnorm_folding_is_exact(model, data):
    folded = copy.deepcopy(model)
    pairs = fold_batchnorm(folded)
    assert len(pairs) == 6 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = data.test.x[:64]
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_pcqat_keeps_sparsity_and_clusters(model, trained_cnn8):
    data = small_splits(trained_cnn8[1], train=128, test=200, val=50)
    pruned = zero_smallest(model, 0.6)
    clustered = run_stage(pruned, data, "cluster", clusters=16)
    before = accuracy(clustered, data.test)
    pcqat = run_stage(clustered, data, "qat", bits=8, epochs=1, lr=1e-4, patience=None)
    for (name, m), (_, p) in zip(layers(pcqat), layers(pruned)):
        w = m.weight.detach()
        assert torch.equal(w == 0, p.weight == 0), name  # sparsity survives clustering and QAT
        assert w[w != 0].unique().numel() <= 16, name  # at most K values per layer
    assert accuracy(pcqat, data.test) >= before - 0.05


def test_pqat_keeps_exact_zeros_of_a_pruned_model(model, trained_cnn8):
    data = small_splits(trained_cnn8[1], train=128, test=100, val=50)
    pruned = zero_smallest(model, 0.5)
    pqat = run_stage(copy.deepcopy(pruned), data, "qat", bits=4, epochs=1, lr=1e-3, patience=None, lsq=True)
    for (name, m), (_, p) in zip(layers(pqat), layers(pruned)):
        assert torch.equal(m.weight.detach() == 0, p.weight == 0), name
        for row in m.weight.detach().reshape(m.weight.shape[0], -1):
            assert row.unique().numel() <= 16
    scales = [
        p.scale for _, m in layers(pqat) for p in m.parametrizations.weight if isinstance(p, WeightFakeQuant)
    ]
    assert all(isinstance(s, nn.Parameter) for s in scales)  # LSQ: learnable step sizes


def test_simulated_and_real_int8_agree(model, data):
    sim = run_stage(copy.deepcopy(model), data, "ptq", bits=8)
    real = run_stage(copy.deepcopy(model), data, "int8", calibration_images=256)
    assert isinstance(real, Int8Model)
    a_sim, a_real = accuracy(sim, data.test), accuracy(real, data.test)
    assert abs(a_sim - a_real) <= 0.01
    with torch.no_grad():
        agree = (sim(data.test.x).argmax(1) == real(data.test.x).argmax(1)).float().mean().item()
    assert agree >= 0.97


def test_int8_model_round_trips_and_holds_no_fp32_weights(model, data, tmp_path):
    real = run_stage(copy.deepcopy(pruned := zero_smallest(model, 0.5)), data, "int8", calibration_images=128)
    sizes = real.weight_bytes()
    n_weights = sum(m.weight.numel() for _, m in layers(pruned))
    assert sizes["int8"] >= n_weights  # every weight stored as int8
    assert sizes.get("float32", 0) < 0.02 * n_weights * 4  # only scales (and normalisation) in fp32
    save_checkpoint(tmp_path / "int8", real)
    loaded, _ = load_checkpoint(tmp_path / "int8")
    x = data.test.x[:32]
    assert torch.equal(loaded(x), real(x))
    # what the int8 model declares about itself, and what the size and efficiency evaluations read
    assert not has_input_gradients(loaded) and not runs_in_torch(loaded)
    assert plain_weights_bytes(loaded) == native_onnx(loaded) == real.onnx_bytes()
    nonzero_bytes = sum(int((t != 0).sum()) * t.element_size() for t in stored_tensors(loaded))
    assert paper002_size(loaded) == (nonzero_bytes, 1.0)
    metrics = efficiency_metrics(loaded, x[:1], None)
    assert "params" not in metrics and metrics["latency.cpu_ms.b1"] > 0


def test_layers_declare_their_storage_to_the_size_estimate():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 6))
    layer = net[0]
    with torch.no_grad():
        layer.weight[:, :10] = 0  # 60 pruned weights, 180 stored
    assert weight_storage(layer) == WeightStorage() and not weight_storage(layer).compressed
    cluster_layer(layer, clusters=5, per_channel=True)
    assert weight_storage(layer) == WeightStorage(index_bits=3, table_size=6 * 5, groups=6)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", WeightFakeQuant(bits=8, groups=6))
    storage = weight_storage(layer)
    assert storage == WeightStorage(value_bits=8, index_bits=3, table_size=30, groups=6)
    assert int((layer.weight != 0).sum()) == 180
    approx, rate = paper002_size(net)
    assert approx == (180 * 3 + 30 * 8 + 6 * 32) / 8  # indices + 8-bit codebook + fp32 bias
    assert rate == pytest.approx((2**3 * 6 * 32 + 3 * 240) / (240 * 32))
    with pytest.raises(ConfigError, match="already clustered or quantized"):
        cluster_layer(layer, clusters=4)


def test_qat_checkpoint_round_trip(model, data, tmp_path):
    q = run_stage(copy.deepcopy(model), data, "qat", bits=4, epochs=0)
    save_checkpoint(tmp_path / "qat", q)
    loaded, _ = load_checkpoint(tmp_path / "qat")
    x = data.test.x[:32]
    with torch.no_grad():
        assert torch.allclose(loaded(x), q(x), atol=1e-6)
