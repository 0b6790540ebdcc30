"""The one-call Python API (robustcompress.compress / evaluate / finetune / export) on real data."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import robustcompress as rc
from robustcompress.compression.quantization.int8 import Int8Model
from robustcompress.errors import ConfigError
from robustcompress.evaluation.registry import EVALUATIONS
from tests.conftest import REPO
from tests.user_models import ResidualCNN

QUICK = {"max_steps_per_epoch": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def user_net(fmnist):
    """A user's CNN with a residual connection, trained a few steps in plain PyTorch on [0, 1] pixels."""
    torch.manual_seed(0)
    net = ResidualCNN()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for i in range(30):
        x, y = fmnist.train.x[i * 32 : (i + 1) * 32], fmnist.train.y[i * 32 : (i + 1) * 32]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _plain_accuracy(net, x, y):
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_evaluate_a_plain_module_gives_plain_pytorchs_accuracy(user_net, fmnist):
    metrics = rc.evaluate(user_net, fmnist, device="cpu")
    expected = _plain_accuracy(user_net, fmnist.test.x, fmnist.test.y)
    assert expected > 0.3  # it learned something, so equality is not a coincidence of chance
    assert metrics["acc.clean"] == pytest.approx(expected, abs=1e-6)


def test_compress_a_plain_module_channel_pruning_reports_what_changed(user_net, fmnist):
    before = copy.deepcopy(user_net.state_dict())
    recipe = [{"type": "prune", "method": "channel", "amount": 0.5}, {"type": "finetune", "epochs": 1}]
    small, metrics = rc.compress(user_net, fmnist, recipe, device="cpu", train=QUICK)
    assert all(torch.equal(v, user_net.state_dict()[k]) for k, v in before.items())  # input untouched
    assert isinstance(small, ResidualCNN)
    assert metrics["params"] < metrics["params.before"]
    assert metrics["macs"] < metrics["macs.before"]
    assert metrics["size.bytes"] < metrics["size.bytes.before"]
    assert metrics["size.reduction"] == pytest.approx(metrics["size.bytes.before"] / metrics["size.bytes"])
    assert metrics["acc.clean.before"] == pytest.approx(
        _plain_accuracy(user_net, fmnist.test.x, fmnist.test.y)
    )
    assert metrics["acc.clean"] == pytest.approx(_plain_accuracy(small, fmnist.test.x, fmnist.test.y))


def test_compress_a_preset_to_int8_with_a_small_budget(user_net, fmnist):
    small, metrics = rc.compress(user_net, fmnist, "pcqat-int8", epochs=1, device="cpu", train=QUICK)
    assert isinstance(small, Int8Model)
    assert metrics["macs"] == metrics["macs.before"]  # the same graph, in int8
    assert metrics["params.nonzero"] < 0.6 * metrics["params.nonzero.before"]  # pruned to 50%
    assert metrics["size.bytes"] < metrics["size.bytes.before"]  # int8 weights (plus the ONNX graph)


def test_compress_preset_overrides_and_their_misuse(user_net, fmnist):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        rc.compress(user_net, fmnist, "nope")
    with pytest.raises(ConfigError, match="in a list of stages"):
        rc.compress(user_net, fmnist, [{"type": "ptq"}], epochs=1)
    stages = rc.api.recipe_stages("pqat", epochs=2, amount=0.3, bits=4)
    assert stages == [{"type": "preset", "name": "pqat", "epochs": 2, "amount": 0.3, "bits": 4}]


def test_finetune_routes_stage_fields_and_objective_params(user_net, fmnist):
    tuned = rc.finetune(user_net, fmnist, "pgd", epochs=1, eps=0.1, steps=2, lr=0.01, device="cpu", **QUICK)
    assert isinstance(tuned, ResidualCNN) and tuned is not user_net
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), user_net.parameters(), strict=True))
    with pytest.raises(ConfigError, match="bogus"):
        rc.finetune(user_net, fmnist, "pgd", epochs=1, bogus=1, device="cpu", **QUICK)


def test_export_onnx_of_a_plain_module_is_checked(user_net, fmnist, tmp_path):
    report = rc.export(
        user_net, tmp_path / "net.onnx", calibration=fmnist, calibration_images=64, latency_runs=1
    )
    assert report["parity_ok"] and report["parity_images"] == 64
    assert (tmp_path / "net.onnx").stat().st_size == report["bytes"]
    with pytest.raises(ConfigError, match="import_model"):
        rc.export(user_net, tmp_path / "int8", format="int8", calibration=fmnist)
    with pytest.raises(ConfigError, match="onnx, int8, rcz"):
        rc.export(user_net, tmp_path / "x", format="tflite")


def test_evaluate_refuses_budgets_and_names_what_is_missing(user_net, fmnist):
    with pytest.raises(ConfigError, match="exceeds the whole"):
        rc.evaluate(user_net, fmnist, attacks="pgd", eps=8)
    with pytest.raises(ConfigError, match="eps > 0"):
        rc.evaluate(user_net, fmnist, attacks="pgd", eps=[0.0], norm="l2")
    with pytest.raises(ConfigError, match="need eps"):
        rc.evaluate(user_net, fmnist, attacks="pgd")
    with pytest.raises(ConfigError, match="import_model"):
        rc.evaluate(user_net, fmnist, size=True)
    if "certified" in EVALUATIONS.names():
        entries = rc.api.evaluation_entries(certify={"sigma": 0.25})
        assert entries[-1] == {"type": "certified", "sigma": 0.25}
    else:
        with pytest.raises(ConfigError, match="'certified' evaluation"):
            rc.evaluate(user_net, fmnist, certify={"sigma": 0.25})


def test_evaluate_attacks_size_and_l2_budget_above_one(user_net, fmnist):
    imported = rc.import_model(user_net, fmnist)  # identity normalisation, a spec that rebuilds it
    metrics = rc.evaluate(
        imported,
        fmnist,
        attacks="pgd",
        eps=[1.5],
        norm="l2",
        attack_params={"n_examples": 20, "steps": 3},
        size=True,
        device="cpu",
    )
    assert [k for k in metrics if k.startswith("acc.pgd_l2")]  # an L2 budget above 1 is valid
    assert metrics["size.bytes"] == metrics["size.bytes_dense"]  # nothing compressed
    assert metrics["acc.clean"] == pytest.approx(_plain_accuracy(user_net, fmnist.test.x, fmnist.test.y))


def test_readme_python_api_runs(data_root, tmp_path, monkeypatch):
    """The README's "Python API" block, with small limits and this machine's data root."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    small = code.replace('root="../shared/data"', f"root={str(data_root)!r}")
    small = small.replace("limit_train=6000", "limit_train=400").replace("limit_test=2000", "limit_test=100")
    assert small.count("400") and small.count(str(data_root))  # the substitutions found their targets
    monkeypatch.chdir(tmp_path)
    exec(compile(small, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "cnn8-pcqat" / "model.onnx").is_file()
