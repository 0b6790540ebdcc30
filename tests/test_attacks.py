"""Attacks on a real trained cnn8 and real Fashion-MNIST images: budgets, strength ordering,
determinism, targeted mode, restarts, and gradient estimators on a model that rounds its input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustcompress.attacks import ATTACKS, BPDA, EOT, StraightThrough, make_attack, zero_gradient_fraction
from robustcompress.errors import ConfigError
from robustcompress.evaluation.adversarial import robust_accuracy
from robustcompress.evaluation.clean import predict

N = 64  # test images per check: small, so the whole file stays fast on 2 cores

# Every registered attack is run by the contract test below; these are only smaller budgets than the
# defaults (so the file stays fast), and what an attack cannot run without. A new attack is tested
# as soon as it is registered; give it an entry here only if its defaults are slow.
SMALL = {
    "pgd": {"steps": 5},
    "apgd-ce": {"steps": 5},
    "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 4, "targets": 2},
    "square": {"queries": 30},
    "cw": {"steps": 10, "search_steps": 2, "lr": 0.1},
    "deepfool": {"steps": 6, "candidates": 4},
    "transfer": {"attack_params": {"steps": 3}},
}
NORM = {"cw": "l2"}  # attacks tested under the L2 norm (their own); the others under L-inf
NEEDS = {"transfer": lambda model: {"surrogate": copy.deepcopy(model)}}


def _params(name: str, model: nn.Module) -> dict:
    return {**SMALL.get(name, {}), **(NEEDS[name](model) if name in NEEDS else {})}


@pytest.fixture(scope="module")
def model_data(trained_cnn8):
    model, splits = trained_cnn8
    return copy.deepcopy(model).eval(), splits.test.x[:N], splits.test.y[:N]


class RoundInput(nn.Module):
    """Fake quantization of the input to `levels` grey levels with torch.round: zero gradient."""

    def __init__(self, levels: int = 8):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class FakeQuantModel(nn.Module):
    def __init__(self, net: nn.Module, levels: int = 8):
        super().__init__()
        self.quant = RoundInput(levels)
        self.net = net

    def forward(self, x):
        return self.net(self.quant(x))


def clean_acc(model, x, y) -> float:
    return (predict(model, x) == y).float().mean().item()


def test_overrides_name_registered_attacks():
    assert set(SMALL) | set(NORM) | set(NEEDS) <= set(ATTACKS), "an override names no registered attack"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_ball_box_and_eps0_is_clean(model_data, name):
    model, x, y = model_data
    x, y = x[:16], y[:16]
    norm = NORM.get(name, "linf")
    eps = 0.1 if norm == "linf" else 1.0
    params = _params(name, model)
    atk = make_attack(name, model, eps, norm=norm, **params)
    x_adv, pred = atk.perturb(x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(pred, predict(model, x_adv))
    # an example the model already gets wrong is returned untouched; one it gets right under attack
    # it also got right clean; and the attack fools the model on some example
    clean = predict(model, x) == y
    assert torch.equal(x_adv[~clean], x[~clean])
    assert not ((pred == y) & ~clean).any()
    assert (pred == y).sum() < clean.sum(), f"{name} fooled the model on no example at eps {eps}"
    again = make_attack(name, model, eps, norm=norm, **params)(x, y)
    assert torch.equal(x_adv, again), "same seed, same result"
    # eps 0: the attack machinery changes nothing, robust accuracy is clean accuracy
    assert robust_accuracy(model, (x, y), name, 0.0, norm=norm, **params) == pytest.approx(
        clean_acc(model, x, y)
    )


def test_pgd_is_at_least_as_strong_as_fgsm(model_data):
    model, x, y = model_data
    fgsm = robust_accuracy(model, (x, y), "fgsm", 0.1)
    pgd = robust_accuracy(model, (x, y), "pgd", 0.1, steps=7)
    clean = clean_acc(model, x, y)
    assert pgd <= fgsm < clean
    assert pgd < 0.5 * clean  # a standard model is not robust at eps 0.1 on Fashion-MNIST


def test_accuracy_does_not_increase_with_eps(model_data):
    model, x, y = model_data
    accs = [robust_accuracy(model, (x, y), "pgd", e, steps=5) for e in (0.0, 0.02, 0.1)]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] > accs[-1]


def test_attacks_are_seeded_and_deterministic(model_data):
    model, x, y = model_data
    a = make_attack("pgd", model, 0.1, steps=3, seed=5)(x[:16], y[:16])
    b = make_attack("pgd", model, 0.1, steps=3, seed=5)(x[:16], y[:16])
    c = make_attack("pgd", model, 0.1, steps=3, seed=6)(x[:16], y[:16])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_restarts_keep_the_per_example_worst_case(model_data):
    model, x, y = model_data
    x1, one = make_attack("pgd", model, 0.03, steps=2, restarts=1, seed=1).perturb(x, y)
    x3, three = make_attack("pgd", model, 0.03, steps=2, restarts=3, seed=1).perturb(x, y)
    # the first of three restarts is the single run (same seed): what it fooled is kept as it was
    fooled = one != y
    assert fooled.any() and torch.equal(x3[fooled], x1[fooled]) and torch.equal(three[fooled], one[fooled])
    assert (three != y).sum() >= fooled.sum()


def test_targeted_pgd_reaches_its_targets(model_data):
    model, x, y = model_data
    x, y = x[:32], y[:32]
    target = (y + 1) % 10
    atk = make_attack("pgd", model, 0.2, steps=6, targeted=True)
    _, pred = atk.perturb(x, y, target)
    hit = (pred == target).float().mean().item()
    untargeted_hit = (make_attack("pgd", model, 0.2, steps=6).perturb(x, y)[1] == target).float().mean()
    assert hit > 0.5 and hit > untargeted_hit


def test_attack_leaves_model_mode_grads_weights_and_layout_alone(model_data):
    model, x, y = model_data
    before = {k: v.clone() for k, v in model.named_parameters()}
    model.train()
    try:
        atk = make_attack("pgd", model, 0.1, steps=2)
        x_adv = atk(x[:8], y[:8])
        x_gen = atk.generate(x[:8], y[:8])
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()
    # attacks run the convolutions channels-last for speed and must put the weights back as they were
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.named_parameters())
    assert x_adv.is_contiguous() and x_gen.is_contiguous()


def test_attack_on_a_pruned_model_keeps_its_masks(model_data):
    """Masks are parametrizations: the layout change must reach the original and leave zeros zero."""
    from robustcompress.compression.pruning import masks_of, prune_unstructured

    model, x, y = model_data
    pruned = copy.deepcopy(model)
    prune_unstructured(pruned, 0.7)
    x_adv, pred = make_attack("pgd", pruned, 0.1, steps=3).perturb(x[:16], y[:16])
    assert (pred == y[:16]).float().mean() <= clean_acc(pruned, x[:16], y[:16])
    for name, mask in masks_of(pruned).items():
        weight = pruned.get_submodule(name.rsplit(".", 1)[0]).weight
        assert weight.is_contiguous() and torch.all(weight[mask == 0] == 0)


def test_bad_parameters_are_config_errors(model_data):
    model, _, _ = model_data
    with pytest.raises(ConfigError, match="queries"):
        make_attack("pgd", model, 0.1, queries=5)
    with pytest.raises(ConfigError, match="norm"):
        make_attack("square", model, 0.1, norm="l2")
    with pytest.raises(ConfigError, match="targeted"):
        make_attack("deepfool", model, 0.1, targeted=True)
    with pytest.raises(ConfigError, match="unknown attack"):
        make_attack("nope", model, 0.1)
    with pytest.raises(ConfigError, match="surrogate"):
        make_attack("transfer", model, 0.1)
    assert {"fgsm", "pgd", "apgd-ce", "apgd-t", "square", "transfer", "cw", "deepfool"} <= set(ATTACKS)


def test_straight_through_lets_pgd_break_a_fake_quantized_model(model_data):
    model, x, y = model_data
    fq = FakeQuantModel(model).eval()
    clean = clean_acc(fq, x, y)
    assert zero_gradient_fraction(fq, x, y) == 1.0  # rounding: autograd sees nothing
    assert zero_gradient_fraction(fq, x, y, "ste") == 0.0
    # plain autograd: PGD cannot move at all (no random start, zero gradient -> zero step)
    plain = robust_accuracy(fq, (x, y), "pgd", 0.1, steps=5, random_start=False)
    assert plain == pytest.approx(clean)
    ste = robust_accuracy(fq, (x, y), "pgd", 0.1, steps=5, random_start=False, estimator=StraightThrough())
    assert ste < clean - 0.3
    # BPDA on the named rounding module does the same job
    bpda = robust_accuracy(fq, (x, y), "pgd", 0.1, steps=5, random_start=False, estimator=BPDA("quant"))
    assert bpda < clean - 0.3


def test_bpda_needs_a_module_that_exists(model_data):
    model, x, y = model_data
    with pytest.raises(ConfigError, match="not in the model"):
        make_attack("fgsm", model, 0.1, estimator=BPDA("nope"))(x[:4], y[:4])


def test_eot_averages_gradients_of_a_random_model(model_data):
    model, x, y = model_data
    # on a deterministic model EOT's average equals the single gradient
    plain = make_attack("fgsm", model, 0.1)
    eot = make_attack("fgsm", model, 0.1, estimator=EOT(samples=3))
    _, g1, _ = plain.gradient(x[:8], y[:8], None)
    _, g3, _ = eot.gradient(x[:8], y[:8], None)
    assert torch.allclose(g1, g3, atol=1e-6)
    # on a random model (input noise in eval mode) the averaged gradient is closer to the noise-free one
    noisy = NoisyModel(model, 0.3)
    _, one, _ = make_attack("fgsm", noisy, 0.1).gradient(x[:8], y[:8], None)
    _, avg, _ = make_attack("fgsm", noisy, 0.1, estimator=EOT(samples=8)).gradient(x[:8], y[:8], None)
    cos = torch.nn.functional.cosine_similarity
    assert cos(avg.flatten(1), g1.flatten(1)).mean() > cos(one.flatten(1), g1.flatten(1)).mean()


class NoisyModel(nn.Module):
    """A randomised 'defence': Gaussian noise on the input, even in eval mode."""

    def __init__(self, net: nn.Module, sigma: float):
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x):
        return self.net((x + self.sigma * torch.randn_like(x)).clamp(0, 1))


def test_transfer_from_the_float_twin_breaks_the_quantized_model(model_data):
    model, x, y = model_data
    fq = FakeQuantModel(model, levels=16).eval()
    clean = clean_acc(fq, x, y)
    transfer = robust_accuracy(fq, (x, y), "transfer", 0.1, surrogate=model, attack_params={"steps": 5})
    assert transfer < clean - 0.3
