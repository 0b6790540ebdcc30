"""Weight clustering: at most K values per layer, kept through fine-tuning; sparsity preserved."""

import copy

import pytest
import torch

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.compression.clustering import ClusterConfig, is_clustered, kmeans_1d
from robustcompress.errors import ConfigError
from robustcompress.evaluation import accuracy
from robustcompress.training.finetune import FinetuneSpec, finetune_config, finetune_model
from tests.test_quant_helpers import context, layers, run_stage, small_splits, zero_smallest


def distinct_nonzero(module) -> int:
    w = module.weight.detach()
    return int(w[w != 0].unique().numel())


def test_clustered_layers_keep_at_most_2_to_bits_values_through_finetuning(trained_cnn8):
    model, splits = trained_cnn8
    data = small_splits(splits, train=128, test=200, val=50)
    clustered = run_stage(copy.deepcopy(model), data, "cluster", bits=4)
    before = {n: m.weight.detach().clone() for n, m in layers(clustered)}
    indices = {n: m.parametrizations.weight[0].index.clone() for n, m in layers(clustered)}
    for _, m in layers(clustered):
        assert is_clustered(m) and m.weight.unique().numel() <= 16
    tuned = clustered
    ctx = context(data)
    finetune_model(tuned, ctx, finetune_config(ctx.train, FinetuneSpec(epochs=1, lr=1e-3, optimizer="adam")))
    moved = 0
    for name, m in layers(tuned):
        assert m.weight.unique().numel() <= 16, name
        assert torch.equal(m.parametrizations.weight[0].index, indices[name])  # assignments fixed
        moved += int(not torch.equal(m.weight.detach(), before[name]))
    assert moved > 0  # centroids were trained
    assert accuracy(tuned, data.test) > 0.5


def test_sparsity_preserving_clustering_keeps_zeros_out_of_the_codebook(trained_cnn8):
    model, splits = trained_cnn8
    pruned = zero_smallest(model, 0.7)
    clustered = run_stage(pruned, small_splits(splits), "cluster", clusters=8, per_channel=True)
    for (name, m), (_, p) in zip(layers(clustered), layers(pruned)):
        zeros = p.weight == 0
        assert torch.equal(m.weight.detach() == 0, zeros), name  # exactly the pruned weights are zero
        for row in m.weight.detach().reshape(m.weight.shape[0], -1):
            assert row[row != 0].unique().numel() <= 8


def test_bits_per_layer_type(trained_cnn8):
    model, splits = trained_cnn8
    clustered = run_stage(copy.deepcopy(model), small_splits(splits), "cluster", conv_bits=3, linear_bits=2)
    for name, m in layers(clustered):
        limit = 4 if isinstance(m, torch.nn.Linear) else 8
        assert distinct_nonzero(m) <= limit, name


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++", "random"])
def test_kmeans_inits_reduce_error_below_uniform_grid(init):
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(2, 4000, generator=gen) * torch.tensor([[1.0], [0.1]])
    mask = torch.ones_like(values, dtype=torch.bool)
    centroids, assign = kmeans_1d(values, mask, 8, init=init, seed=1)
    assert torch.all(centroids[:, 1:] >= centroids[:, :-1])
    err = (centroids.gather(1, assign) - values).pow(2).mean(1)
    grid = torch.stack([torch.linspace(v.min().item(), v.max().item(), 8) for v in values])
    grid_err = (
        (grid.gather(1, torch.searchsorted((grid[:, 1:] + grid[:, :-1]) / 2, values)) - values).pow(2).mean(1)
    )
    assert torch.all(err <= grid_err * 1.001)


def test_clustered_model_round_trips_through_checkpoint(trained_cnn8, tmp_path):
    model, splits = trained_cnn8
    clustered = run_stage(copy.deepcopy(model), small_splits(splits), "cluster", clusters=16)
    save_checkpoint(tmp_path / "ck", clustered)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    x = splits.test.x[:32]
    with torch.no_grad():
        assert torch.allclose(loaded(x), clustered(x), atol=1e-6)
    assert all(is_clustered(m) for _, m in layers(loaded))


def test_bad_cluster_config_is_refused():
    with pytest.raises(ConfigError, match="clusters"):
        ClusterConfig.parse({"clusters": 1})
    with pytest.raises(ConfigError, match="unknown key"):
        ClusterConfig.parse({"centroids": 4})
