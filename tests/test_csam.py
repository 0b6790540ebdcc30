"""C-SAM (paper 004) and its baselines: SAM, HYDRA, CrAM, on tiny cnn8 models and real Fashion-MNIST."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustcompress.certification.transforms import make_family
from robustcompress.compression.cram import CrAM, CramConfig, compression_targets, recalibrate_batchnorm
from robustcompress.compression.csam import (
    ClampMasks,
    CSAMConfig,
    CSAMLoss,
    consistency_loss,
    mask_noise,
    percentile_init,
    ratio_loss,
    stability_loss,
)
from robustcompress.compression.pruning import is_masked, masks_of, prune_unstructured
from robustcompress.compression.pruning.hydra import HydraConfig
from robustcompress.compression.pruning.scored import MaskedModel, MaskSpace, straight_through
from robustcompress.errors import ConfigError
from robustcompress.models import build_model
from robustcompress.stages import STAGES, StageContext
from robustcompress.training import TrainConfig, fit
from robustcompress.training.finetune import FinetuneConfig, finetune_config
from robustcompress.training.sam import SAM
from tests.tiny_study import tiny_config


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn8", in_channels=1, input_size=28, width=0.25)


def _ctx(splits) -> StageContext:
    return StageContext(
        data=splits,
        device=torch.device("cpu"),
        seed=0,
        train=TrainConfig(batch_size=64, lr=0.05),
        progress=False,
    )


def _apply(name, model, splits, **cfg):
    stage = STAGES.get(name)
    return stage.apply(model, stage.config_cls.parse(cfg, where=name), _ctx(splits))


def _conv_widths(model) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


# ----------------------------------------------------------------------------------- the losses


def test_each_csam_loss_is_zero_or_minimal_where_the_paper_says(fmnist):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=gen)
    p = logits.softmax(1)
    other = torch.randn(16, 10, generator=gen).softmax(1)
    # L_stab: the variance across mask samples vanishes when both samples give the same prediction
    assert stability_loss(p, p).item() == 0.0
    assert stability_loss(p, other).item() == pytest.approx(((p - other) ** 2).sum(1).mean().item() / 4)
    # L_ratio under the identity transformation: r = 0, so the loss is softplus(-eta), its minimum
    x = fmnist.test.x[:16]
    same = make_family("identity").sample(x, gen)
    for eta in (0.5, 1.0):
        assert ratio_loss(p, p, eta).item() == pytest.approx(math.log1p(math.exp(-eta)), abs=1e-7)
    assert torch.equal(same, x)
    assert ratio_loss(p, other, 1.0).item() > math.log1p(math.exp(-1.0))
    # L_consist: zero when the soft predictions equal the binarised ones
    assert consistency_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert consistency_loss(logits, logits, "mse").item() == 0.0
    assert consistency_loss(logits, torch.randn(16, 10, generator=gen)).item() > 0.01


def test_consistency_is_zero_through_a_model_when_soft_masks_are_already_binary(fmnist):
    model = _tiny()
    space = MaskSpace.weights(model)
    soft = space.binarise(space.importance(model), 0.5, "global")  # binary soft masks
    masked = MaskedModel(model, space, soft, lambda v, training: v).eval()  # no dropout
    hard = {u: straight_through(v, space.binarise(dict(masked.current()), 0.5, "global")[u]) for u, v in
            masked.current().items()}  # fmt: skip
    x = fmnist.test.x[:8]
    assert consistency_loss(masked(x, masked.current()), masked(x, hard)).item() == pytest.approx(0, abs=1e-6)
    # and the straight-through estimator passes gradients to the soft masks
    F.cross_entropy(masked(x, hard), fmnist.test.y[:8]).backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in masked.values)


def test_mask_noise_stays_in_the_box_and_within_mu():
    c = torch.rand(1000, generator=torch.Generator().manual_seed(1))
    noisy = mask_noise(c, 0.5, torch.Generator().manual_seed(2))
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert (noisy - c).abs().max() <= 0.5 + 1e-6
    assert (noisy - c).abs().max() > 0.4  # the noise really spans U(-mu, mu)
    assert torch.equal(mask_noise(c, 0.0), c)


def test_percentile_init_puts_the_top_tau_percent_at_one():
    w = {"a": torch.arange(1.0, 101.0), "b": torch.arange(1.0, 11.0)}
    init = percentile_init(w, 30)
    assert int((init["a"] == 1).sum()) == 31 and int((init["b"] == 1).sum()) == 4  # ties at the percentile
    assert init["a"][0].item() == pytest.approx(1 / 70)
    full = percentile_init(w, 0)  # "full scaling": divided by the maximum, everything small
    assert int((full["a"] == 1).sum()) == 1 and full["a"].mean().item() == pytest.approx(0.505)


# ----------------------------------------------------------------------------------- the C-SAM stage


def test_csam_weight_masks_reach_exactly_the_requested_sparsity(fmnist):
    model = _tiny()
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    pruned = _apply(
        "csam",
        model,
        fmnist,
        amount=0.6,
        pretrain_epochs=1,
        search_epochs=1,
        finetune_epochs=1,
        max_steps_per_epoch=3,
    )
    masks = masks_of(pruned)
    assert set(masks) == {
        f"{n}.weight" for n, m in pruned.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    }
    assert sum(int((m == 0).sum()) for m in masks.values()) == math.floor(0.6 * n + 0.5)
    zeros = sum(int((m.weight == 0).sum()) for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros >= math.floor(0.6 * n + 0.5)  # the pruned weights really are zero after fine-tuning
    layer = _apply(
        "csam",
        _tiny(),
        fmnist,
        amount=0.5,
        scope="layer",
        pretrain_epochs=0,
        search_epochs=1,
        finetune_epochs=0,
        max_steps_per_epoch=2,
    )
    for m in masks_of(layer).values():
        assert int((m == 0).sum()) == math.floor(0.5 * m.numel() + 0.5)


def test_without_a_search_csam_binarises_its_start_into_magnitude_pruning(fmnist):
    """The percentile start puts the top 30% at exactly 1; at 90% sparsity ties among them go to magnitude."""
    pruned = _apply("csam", _tiny(), fmnist, amount=0.9, scope="layer", pretrain_epochs=0, search_epochs=0,
                    finetune_epochs=0)  # fmt: skip
    reference = _tiny()
    prune_unstructured(reference, 0.9, "layerwise")
    expected = masks_of(reference)
    assert all(torch.equal(m, expected[k]) for k, m in masks_of(pruned).items())


def test_csam_channel_masks_remove_exactly_the_channels_and_the_model_shrinks(fmnist):
    model = _tiny()
    dense = sum(p.numel() for p in model.parameters())
    assert _conv_widths(model) == [8, 8, 16, 16, 32, 32]
    pruned = _apply(
        "csam",
        model,
        fmnist,
        amount=0.5,
        granularity="channel",
        pretrain_epochs=1,
        search_epochs=1,
        finetune_epochs=1,
        max_steps_per_epoch=3,
    )
    assert not is_masked(pruned)
    assert _conv_widths(pruned) == [4, 4, 8, 8, 16, 16]
    assert sum(p.numel() for p in pruned.parameters()) < 0.35 * dense
    assert pruned(fmnist.test.x[:4]).shape == (4, 10)


def test_only_mask_parameters_change_during_the_mask_search(fmnist):
    model = _tiny()
    fit(
        model,
        fmnist,
        TrainConfig(epochs=1, batch_size=64, lr=0.05, max_steps_per_epoch=5),
        device="cpu",
        progress=False,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = CSAMConfig(amount=0.5)
    space = MaskSpace.weights(model)
    init = percentile_init(space.importance(model), cfg.tau)
    masked = MaskedModel(model, space, init, lambda v, training: v, frozen_statistics=True)
    loss = CSAMLoss(cfg, make_family(cfg.transforms).sample, 0.5, "global", torch.Generator().manual_seed(0))
    search = TrainConfig(
        epochs=1,
        batch_size=64,
        optimizer="adam",
        lr=0.05,
        weight_decay=0.0,
        max_steps_per_epoch=4,
        restore_best=False,
    )
    fit(masked, fmnist, search, loss, device="cpu", callbacks=[ClampMasks()], progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights, biases and BN statistics
    changed = [not torch.equal(v.detach(), init[u]) for u, v in masked.current().items()]
    assert all(changed)
    assert all(float(v.detach().min()) >= 0 and float(v.detach().max()) <= 1 for v in masked.values)
    assert set(loss.last) == {"stab", "ratio", "consist", "l1", "ce"} and loss.last["stab"] > 0


# ----------------------------------------------------------------------------------- SAM


def test_sam_step_is_the_gradient_at_the_ascent_point():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    w0 = [p.detach().clone() for p in model.parameters()]
    loss_fn = lambda: F.cross_entropy(model(x), y)  # noqa: E731
    loss_fn().backward()
    g = [p.grad.clone() for p in model.parameters()]
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for p, w, gi in zip(probe.parameters(), w0, g):
            p.copy_(w + 0.1 * gi / norm)
    F.cross_entropy(probe(x), y).backward()
    expected = [w - 0.5 * p.grad for w, p in zip(w0, probe.parameters())]
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.5), model, rho=0.1)
    sam.step(lambda: loss_fn().backward())
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def _pruned_tiny(amount: float) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = _tiny()
    prune_unstructured(model, amount)
    return model, {k: m.clone() for k, m in masks_of(model).items()}


def _regrowth_config(steps: int, **extra) -> TrainConfig:
    """Momentum and weight decay: what would give a pruned weight a value again if masks were not kept."""
    return TrainConfig(
        epochs=1, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-3, max_steps_per_epoch=steps,
        restore_best=False, **extra,
    )  # fmt: skip


def _stored_pruned_entries_are_zero(model: nn.Module, masks: dict[str, torch.Tensor]) -> bool:
    return all(
        (model.get_submodule(name.rsplit(".", 1)[0]).parametrizations.weight.original[mask == 0] == 0).all()
        for name, mask in masks.items()
    )


def test_pruned_weights_stay_zero_through_sam_and_norm_statistics_follow_one_pass(fmnist):
    model, masks = _pruned_tiny(0.7)
    cfg = _regrowth_config(6, sam_rho=0.05)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    plain = copy.deepcopy(model)
    fit(model, fmnist, cfg, device="cpu", progress=False)
    fit(plain, fmnist, cfg.model_copy(update={"sam_rho": None}), device="cpu", progress=False)
    assert int(bn.num_batches_tracked) == 6  # statistics from the first pass of each step only
    for name, mask in masks.items():
        assert (model.get_submodule(name.rsplit(".", 1)[0]).weight[mask == 0] == 0).all()
    assert _stored_pruned_entries_are_zero(model, masks)
    assert not torch.equal(
        model.net.features[1][0].weight, plain.net.features[1][0].weight
    )  # SAM did something
    assert (
        "sam_rho" not in TrainConfig().key_dict() and TrainConfig(sam_rho=0.05).key_dict()["sam_rho"] == 0.05
    )


def test_sam_then_prune_baseline_is_expressible_as_stages(fmnist):
    tuned = finetune_config(TrainConfig(), FinetuneConfig(sam_rho=0.05, epochs=1))
    assert tuned.sam_rho == 0.05 and "sam_rho" not in FinetuneConfig().key_dict()
    model = _apply("finetune", _tiny(), fmnist, epochs=1, sam_rho=0.05, max_steps_per_epoch=2)
    pruned = _apply("prune", model, fmnist, amount=0.5)
    assert all(
        int((m == 0).sum()) == math.floor(0.5 * m.numel() + 0.5)
        for m in [torch.cat([v.flatten() for v in masks_of(pruned).values()])]
    )


# ----------------------------------------------------------------------------------- CrAM


def test_pruned_weights_stay_zero_through_cram_steps(fmnist):
    model, masks = _pruned_tiny(0.5)
    cfg = _regrowth_config(5)
    made = []

    def wrapper(base, net):
        made.append(
            CrAM(
                base,
                net,
                compression_targets(net),
                [0.6, 0.9],
                rho=0.05,
                generator=torch.Generator().manual_seed(0),
            )
        )
        return made[0]

    before = copy.deepcopy(model)
    fit(model, fmnist, cfg, device="cpu", progress=False, sam=wrapper)
    assert len(made[0].drawn) == 5 and set(made[0].drawn) <= {0.6, 0.9}
    assert _stored_pruned_entries_are_zero(model, masks)
    for name, mask in masks.items():
        kept = model.get_submodule(name.rsplit(".", 1)[0]).parametrizations.weight.original[mask == 1]
        assert (kept != 0).float().mean() > 0.99  # the dense part is not left compressed after the ascent
    assert not torch.equal(before.net.features[1][0].weight, model.net.features[1][0].weight)


def test_cram_stage_prunes_exactly_and_recalibrates_batch_norm(fmnist):
    model = _tiny()
    model_mean_before = model.net.features[0][1].running_mean.clone()
    pruned = _apply(
        "cram", model, fmnist, amount=0.7, epochs=1, max_steps_per_epoch=3, calibration_images=256
    )
    flat = torch.cat([m.flatten() for m in masks_of(pruned).values()])
    assert int((flat == 0).sum()) == math.floor(0.7 * flat.numel() + 0.5)
    # the first batch norm's running mean is the mean of its inputs over the calibration images
    probe = copy.deepcopy(pruned)
    recalibrate_batchnorm(probe, fmnist.train.x[:256], batch_size=128)
    conv, bn = probe.net.features[0][0], probe.net.features[0][1]
    with torch.no_grad():
        z = conv(probe.normalize(fmnist.train.x[:256]))
    torch.testing.assert_close(bn.running_mean, z.mean((0, 2, 3)), atol=1e-3, rtol=1e-3)  # float32 sums
    assert not torch.allclose(bn.running_mean, model_mean_before, atol=1e-3)


# ----------------------------------------------------------------------------------- HYDRA


def test_hydra_freezes_weights_while_scores_train_and_reaches_exact_sparsity(fmnist):
    model = _tiny()
    space = MaskSpace.weights(model)
    from robustcompress.compression.pruning.hydra import scaled_scores

    scores = scaled_scores(model, space)
    first = model.net.features[0][0].weight
    assert torch.allclose(scores["net.features.0.0"], math.sqrt(6 / 9) * first / first.abs().max())

    def top_k(values, training):
        size = {u: s.abs() for u, s in values.items()}
        hard = space.binarise(size, 0.8, "layer")
        return {u: straight_through(size[u], hard[u]) for u in size}

    before = {k: v.clone() for k, v in model.named_parameters()}
    masked = MaskedModel(model, space, scores, top_k)
    cfg = TrainConfig(
        epochs=1,
        batch_size=64,
        lr=0.1,
        objective="pgd",
        objective_params={"steps": 2},
        max_steps_per_epoch=3,
        restore_best=False,
    )
    fit(masked, fmnist, cfg, device="cpu", progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    assert any(not torch.equal(v.detach(), scores[u]) for u, v in masked.current().items())

    pruned = _apply(
        "hydra",
        _tiny(),
        fmnist,
        amount=0.8,
        score_epochs=1,
        finetune_epochs=1,
        max_steps_per_epoch=2,
        objective_params={"steps": 2},
    )
    for m in masks_of(pruned).values():  # HYDRA's layer-wise top-k: exact in every layer
        assert int((m == 0).sum()) == math.floor(0.8 * m.numel() + 0.5)


# ----------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("cls", [CSAMConfig, HydraConfig, CramConfig])
@pytest.mark.parametrize("amount", [0, 1, 1.5])
def test_sparsity_outside_zero_one_is_a_config_error(cls, amount):
    with pytest.raises(ConfigError, match="amount"):
        cls.parse({"amount": amount}, where="stage")


def test_bad_csam_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown transformation|magic"):
        CSAMConfig.parse({"transforms": "magic"}, where="csam")
    with pytest.raises(ConfigError, match="mu"):
        CSAMConfig.parse({"mu": 1.5}, where="csam")
    with pytest.raises(ConfigError, match="sparsities"):
        CramConfig.parse({"sparsities": [0.5, 1.0]}, where="cram")


def test_a_csam_then_cluster_recipe_validates_and_runs(tmp_path, data_root):
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.runner import run_experiments

    path = tiny_config(
        tmp_path,
        data_root,
        """
max_steps_per_epoch = 3
[[recipes]]
name = "csam-cluster"
[[recipes.stages]]
type = "csam"
amount = 0.5
pretrain_epochs = 1
search_epochs = 1
finetune_epochs = 1
transforms = "rotation:15"
[[recipes.stages]]
type = "cluster"
clusters = 8
[[evaluations]]
type = "clean"
[[evaluations]]
type = "efficiency"
latency = false
layer_table = false
""",
        name="csam",
        limit_train=300,
        limit_test=100,
    )
    results = run_experiments(load_config(path), progress=False)
    final = results[0].metrics["final"]
    assert 0 <= final["acc.clean"] <= 1
    assert final["sparsity"] >= 0.5 - 1e-6  # clustering keeps the pruned zeros
