"""The adversarial evaluation (suite, cascade, metric names, curves), each gradient-masking flag on a
model built to trigger it, the robust training objectives, and the `attack` command."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustcompress.capabilities import has_input_gradients
from robustcompress.cli import main
from robustcompress.errors import ConfigError
from robustcompress.evaluation import EVALUATIONS, EvalContext
from robustcompress.evaluation.adversarial import (
    accuracy_curve,
    evaluate_robustness,
    format_eps,
    plot_accuracy_curves,
    robust_accuracy,
)
from robustcompress.evaluation.registry import producer
from robustcompress.training import OBJECTIVES, TrainConfig, fit, make_objective
from robustcompress.training.robust_objectives import frozen_norm_statistics, max_margin_loss
from tests.test_attacks import FakeQuantModel, NoisyModel

N = 64


@pytest.fixture(scope="module")
def model_data(trained_cnn8):
    model, splits = trained_cnn8
    return copy.deepcopy(model).eval(), splits


def first(splits, n=N):
    return splits.test.x[:n], splits.test.y[:n]


def test_format_eps_is_short_and_stable():
    assert format_eps(0.1) == "0.1"
    assert format_eps(8 / 255) == "0.0314"
    assert format_eps(0.5) == "0.5"
    assert format_eps(2.0) == "2"
    assert format_eps(0.0) == "0"
    assert format_eps(1e-6) == "1.00e-06"


def test_registered_evaluation_gives_named_metrics(model_data):
    model, splits = model_data
    definition = EVALUATIONS.get("adversarial")
    cfg = definition.config_cls.parse(
        {"attacks": ["fgsm", "pgd"], "eps": [0.1, 8 / 255], "steps": 3, "n_examples": 32}
    )
    metrics = definition.run(model, cfg, EvalContext(data=splits, device=torch.device("cpu")))
    for eps in ("0.1", "0.0314"):
        for name in ("fgsm", "pgd", "worst"):
            assert 0 <= metrics[f"acc.{name}_linf_{eps}"] <= metrics["adv.clean_acc"]
    assert metrics["acc.worst_linf_0.1"] <= metrics["acc.worst_linf_0.0314"]
    assert metrics["adv.n_examples"] == 32
    assert not [k for k in metrics if k.startswith("flag.")]  # a real model raises no masking flag
    assert {producer(k) for k in metrics} == {"adversarial"}  # every metric declared by the evaluation


class NoInputGradients(nn.Module):
    """A user model that declares it has no input gradients (as a compiled runtime model does)."""

    input_gradients = False

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    @torch.no_grad()
    def forward(self, x):
        return self.inner(x)


def test_a_model_declaring_no_input_gradients_is_attacked_by_transfer_and_square(model_data):
    model, splits = model_data
    opaque = NoInputGradients(model)
    assert has_input_gradients(model) and not has_input_gradients(opaque)
    assert not has_input_gradients(nn.Sequential(opaque))  # declared by a submodule counts too
    definition = EVALUATIONS.get("adversarial")
    cfg = definition.config_cls.parse(
        {
            "attacks": ["pgd"],
            "eps": [0.1],
            "steps": 5,
            "n_examples": 32,
            "attack_params": {"square": {"queries": 5}},
        }
    )
    ctx = EvalContext(data=splits, device=torch.device("cpu"), parent=model)
    metrics = definition.run(opaque, cfg, ctx)
    assert "acc.pgd_linf_0.1" not in metrics  # no white-box attack on it
    assert {"acc.square_linf_0.1", "acc.transfer_linf_0.1"} <= set(metrics)
    assert "flag.nondifferentiable" in metrics
    # the parent is the very same network: PGD transferred from it is as strong as PGD on the model
    x, y = first(splits, 32)
    assert metrics["acc.worst_linf_0.1"] <= robust_accuracy(model, (x, y), "pgd", 0.1, steps=5)
    assert metrics["acc.worst_linf_0.1"] < metrics["adv.clean_acc"]


def test_config_errors_name_the_key(model_data):
    cls = EVALUATIONS.get("adversarial").config_cls
    with pytest.raises(ConfigError, match="unknown attack 'nope'"):
        cls.parse({"attacks": ["nope"], "eps": [0.1]})
    with pytest.raises(ConfigError, match="eps"):
        cls.parse({"eps": [-0.1]})
    with pytest.raises(ConfigError, match="unknown key 'epsilon'"):
        cls.parse({"epsilon": [0.1]})
    model, splits = model_data
    x, y = first(splits, 4)
    with pytest.raises(ConfigError, match="surrogate"):
        evaluate_robustness(model, x, y, ["transfer"], 0.1)


def test_standard_suite_cascade_gives_the_worst_case(model_data):
    model, splits = model_data
    x, y = first(splits, 32)
    params = {"apgd-t": {"targets": 2}, "square": {"queries": 20}}
    report = evaluate_robustness(model, x, y, "standard", 0.1, steps=4, attack_params=params, sanity=False)
    accs = report.accuracy[0.1]
    assert list(accs) == ["apgd-ce", "apgd-t", "square"]
    assert list(accs.values()) == sorted(accs.values(), reverse=True)  # running worst case
    assert report.worst[0.1] == accs["square"] <= robust_accuracy(model, (x, y), "apgd-ce", 0.1, steps=4)


def test_accuracy_curve_and_plot(model_data, tmp_path):
    model, splits = model_data
    x, y = first(splits, 32)
    curves = accuracy_curve(model, x, y, [0.05, 0.1], "fgsm", sanity=False)
    assert [e for e, _ in curves["fgsm"]] == [0.0, 0.05, 0.1]
    accs = [a for _, a in curves["worst"]]
    assert accs == sorted(accs, reverse=True)
    path = plot_accuracy_curves(curves, tmp_path / "curve.png")
    assert path.stat().st_size > 1000


# -- every gradient-masking flag fires on a model built to trigger it -------------------------


def test_flag_eps0_fires_on_a_random_model(model_data):
    model, splits = model_data
    x, y = first(splits)
    torch.manual_seed(0)  # the model draws its noise from the global generator: same draws in any test order
    with pytest.warns(UserWarning, match="eps0"):
        report = evaluate_robustness(NoisyModel(model, 0.4), x, y, ["fgsm"], 0.05)
    assert "eps0" in report.flags


def test_flags_zero_grad_large_eps_blackbox_fire_on_a_rounding_model(model_data):
    model, splits = model_data
    x, y = first(splits)
    fq = FakeQuantModel(model, levels=8).eval()
    params = {"square": {"queries": 25}}
    report = evaluate_robustness(fq, x, y, ["pgd", "square"], 0.1, steps=3, attack_params=params)
    assert {"zero_grad", "large_eps", "blackbox"} <= set(report.flags)
    assert "flag.zero_grad" in report.metrics()


class SaturateOffGrid(nn.Module):
    """Masks gradients away from the data: images live on a 5-level grid; once any pixel is more than
    0.07 off it, the logits are scaled by 10^4 (same prediction, saturated softmax, zero CE gradient).
    A single FGSM step from the clean point sees the true gradient; PGD, starting at a random point of
    the ball, sees nothing at eps 0.12 (but everything at eps 0.06, which never gets 0.07 off)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        off = (x - torch.round(x * 4) / 4).abs().flatten(1).amax(1)
        return self.net(x) * (1 + 1e4 * torch.relu(off - 0.07))[:, None]


def test_flags_steps_and_eps_monotone_fire_on_a_trap_model(model_data):
    model, splits = model_data
    x, y = first(splits)
    x = torch.round(x * 4) / 4
    report = evaluate_robustness(SaturateOffGrid(model), x, y, ["pgd", "fgsm"], [0.06, 0.12], steps=4)
    assert {"steps", "eps_monotone"} <= set(report.flags)


# -- objectives ---------------------------------------------------------------------------------


def test_max_margin_hinge_matches_eq_9():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.5, 0.2, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    # margins 2, 0.3, -2 -> hinge 0, 0.7, 3
    assert max_margin_loss(z, y).item() == pytest.approx((0 + 0.7 + 3) / 3)


@pytest.mark.parametrize("name", ["pgd", "fgsm_rs", "trades", "mmr"])
def test_objectives_return_loss_and_clean_logits(model_data, name):
    model, splits = model_data
    model = copy.deepcopy(model).train()
    x, y = splits.train.x[:16], splits.train.y[:16]
    params = {"steps": 2} if name in ("pgd", "trades") else {}
    loss, logits = make_objective(name, **params)(model, x, y)
    assert torch.isfinite(loss) and logits.shape == (16, 10)
    assert model.training  # the fit loop's mode is restored after crafting
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert name in OBJECTIVES


@pytest.mark.parametrize("craft", ["eval", "train"])
def test_crafting_leaves_batch_norm_statistics_to_the_training_pass(model_data, craft):
    model, splits = model_data
    model = copy.deepcopy(model).train()
    x, y = splits.train.x[:32], splits.train.y[:32]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.num_batches_tracked.clone()) for m in norms]
    with frozen_norm_statistics(model):
        model(x)  # a train-mode pass with batch statistics
    for m, (mean, tracked) in zip(norms, before):
        assert torch.equal(m.running_mean, mean) and m.num_batches_tracked == tracked
    assert all(m.momentum == 0.1 for m in norms)
    # crafting adds nothing to the statistics: only the loss's own train-mode pass on x_adv counts
    objective = make_objective("pgd", steps=3, craft=craft)
    objective(model, x, y)
    assert all(m.num_batches_tracked == t + 1 for m, (_, t) in zip(norms, before))


def test_bad_objective_params_are_config_errors():
    with pytest.raises(ConfigError):
        make_objective("pgd", epsilon=0.1)
    with pytest.raises(ConfigError, match="craft"):
        make_objective("fgsm_rs", craft="test")
    with pytest.raises(ConfigError):
        make_objective("mmr", on="features")


def test_adversarial_finetuning_restores_robustness(model_data):
    model, splits = model_data
    x, y = first(splits)
    before = robust_accuracy(model, (x, y), "pgd", 0.1, steps=5)
    tuned = copy.deepcopy(model)
    cfg = TrainConfig(
        epochs=1,
        batch_size=64,
        lr=0.01,
        objective="fgsm_rs",
        objective_params={"eps": 0.1},
        schedule="constant",
    )
    fit(tuned, splits, cfg, device="cpu", seed=0, progress=False)
    after = robust_accuracy(tuned, (x, y), "pgd", 0.1, steps=5)
    assert after > before + 0.15


# -- CLI ----------------------------------------------------------------------------------------


def test_attack_command_json(model_data, data_root, tmp_path):
    from robustcompress.checkpoint import save_checkpoint

    model, _ = model_data
    ckpt = save_checkpoint(tmp_path / "ckpt", model, {"data": {"dataset": "fashion-mnist"}})
    args = ["attack", str(ckpt), "--data-root", str(data_root), "--limit-test", "100", "--n-examples", "24"]
    result = CliRunner().invoke(
        main, [*args, "--attack", "fgsm,pgd", "--eps", "8/255", "--steps", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"acc.clean", "acc.fgsm_linf_0.0314", "acc.pgd_linf_0.0314", "acc.worst_linf_0.0314"} <= set(
        metrics
    )
    bad = CliRunner().invoke(main, [*args, "--attack", "nope", "--eps", "0.1"])
    assert bad.exit_code == 2 and "unknown attack" in bad.output


@pytest.fixture(scope="module")
def int8_cnn8(model_data):
    from robustcompress.compression.quantization import to_int8

    model, splits = model_data
    return to_int8(model, splits.train.x[:256]), model, splits


def test_the_int8_fake_quant_twin_computes_what_the_int8_model_computes(int8_cnn8):
    qmodel, model, splits = int8_cnn8
    twin = qmodel.differentiable_twin()
    assert has_input_gradients(twin) and not has_input_gradients(qmodel)
    x = splits.test.x[:200]
    with torch.no_grad():
        q, t, f = qmodel(x), twin(x), model(x)
    assert (q.argmax(1) == t.argmax(1)).float().mean() >= 0.99
    # the same quantization: most of the twin's logits are exactly the int8 model's (ONNX Runtime
    # 1.32 rounds some requantizations differently, measured 69% equal here), the float model's
    # almost none; and the twin is the closer of the two
    same_as_int8 = lambda out: torch.isclose(q, out, rtol=0, atol=1e-5).float().mean()  # noqa: E731
    assert same_as_int8(t) >= 0.5 and same_as_int8(f) <= 0.05
    assert (q - t).abs().mean() < (q - f).abs().mean()
    xg = x[:8].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(twin(xg), splits.test.y[:8]).backward()
    assert (xg.grad.flatten(1).abs().amax(1) > 0).all()  # straight-through: gradients reach the input


def test_an_int8_model_is_attacked_white_box_through_its_twin(int8_cnn8):
    qmodel, model, splits = int8_cnn8
    definition = EVALUATIONS.get("adversarial")
    cfg = definition.config_cls.parse(
        {
            "attacks": ["pgd"],
            "eps": [0.1],
            "steps": 10,
            "n_examples": 200,
            "attack_params": {"square": {"queries": 10}},
        }
    )
    metrics = definition.run(qmodel, cfg, EvalContext(data=splits, device=torch.device("cpu"), parent=model))
    assert {"acc.pgd_linf_0.1", "acc.square_linf_0.1", "acc.transfer_linf_0.1"} <= set(metrics)
    assert "flag.nondifferentiable" not in metrics and "twin" in metrics["adv.white_box_via"]
    # the reported worst case is no higher than the twin's own white-box worst case plus 2 points
    x, y = first(splits, 200)
    twin_worst = evaluate_robustness(qmodel.differentiable_twin(), x, y, ["pgd"], 0.1, steps=10, sanity=False)
    assert metrics["acc.worst_linf_0.1"] <= twin_worst.worst[0.1] + 0.02
    assert not [k for k in metrics if k.startswith("flag.")]  # the checks ran on the twin and passed


def test_the_attack_command_attacks_an_int8_checkpoint_through_its_twin(model_data, data_root, tmp_path):
    from robustcompress.checkpoint import save_checkpoint
    from robustcompress.experiments.pipeline import apply_stages, parse_stages
    from robustcompress.stages import StageContext

    model, splits = model_data
    ctx = StageContext(data=splits, device=torch.device("cpu"), seed=0, progress=False)
    qmodel = apply_stages(model, parse_stages([{"type": "int8", "calibration_images": 256}]), ctx)[-1].model
    ckpt = save_checkpoint(tmp_path / "int8", qmodel, {"data": {"dataset": "fashion-mnist"}})
    args = ["attack", str(ckpt), "--data-root", str(data_root), "--limit-test", "100", "--n-examples", "24"]
    result = CliRunner().invoke(
        main, [*args, "--attack", "pgd", "--eps", "0.1", "--steps", "5", "--queries", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert "twin" in metrics["adv.white_box_via"] and "flag.nondifferentiable" not in metrics
    assert {"acc.pgd_linf_0.1", "acc.square_linf_0.1"} <= set(metrics)
