"""Bring your own model: weights trained in plain PyTorch (or torchvision's) imported, checked, evaluated."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from robustcompress.checkpoint import load_checkpoint, save_checkpoint
from robustcompress.cli import main
from robustcompress.errors import CheckpointError, ConfigError
from robustcompress.evaluation import accuracy
from robustcompress.models import ModelSpec, import_model
from robustcompress.models.torchvision_names import to_zoo_names
from robustcompress.models.weights import fit_state_dict, read_state_dict
from tests.user_models import ResidualCNN

FACTORY = "tests.user_models:residual_cnn"
FMNIST_STATS = (0.2860, 0.3530)  # the user's own normalisation (Fashion-MNIST's mean and std)
TORCHVISION = json.loads((Path(__file__).parent / "data" / "torchvision_keys.json").read_text())
ZOO = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "vgg16_bn": "vgg16",
    "vgg19_bn": "vgg19",
    "mobilenet_v2": "mobilenetv2",
}


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _plain_accuracy(net, data, mean=0.0, std=1.0) -> float:
    """What a user computes in plain PyTorch: their normalisation, their model, argmax."""
    net.eval()
    with torch.no_grad():
        return (net((data.x - mean) / std).argmax(1) == data.y).float().mean().item()


@pytest.fixture(scope="module", params=["none", "own"])
def user_net(request, fmnist):
    """(normalisation, trained ResidualCNN): 120 Adam steps on 1000 Fashion-MNIST images."""
    mean, std = FMNIST_STATS if request.param == "own" else (0.0, 1.0)
    return request.param, _train_user_net(fmnist, mean, std)


def _train_user_net(fmnist, mean: float, std: float) -> ResidualCNN:
    torch.manual_seed(0)
    net = ResidualCNN()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(120):
        idx = torch.randint(len(fmnist.train), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net((fmnist.train.x[idx] - mean) / std), fmnist.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _normalize_option(kind: str) -> str:
    return "none" if kind == "none" else ",".join(map(str, FMNIST_STATS))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_cli_import_then_evaluate_equals_plain_pytorch(user_net, fmt, fmnist, data_root, tmp_path):
    kind, net = user_net
    mean, std = FMNIST_STATS if kind == "own" else (0.0, 1.0)
    plain = _plain_accuracy(net, fmnist.test, mean, std)
    assert plain > 0.5  # trained, so equality below compares real predictions
    weights = tmp_path / f"net.{fmt}"
    if fmt == "pth":
        torch.save(net.state_dict(), weights)
    else:
        safetensors.torch.save_file(net.state_dict(), str(weights))
    out = tmp_path / "ck"
    data = ["--dataset", "fashion-mnist", "--data-root", data_root, "--limit-test", 500]
    result = _cli("import", "--model", FACTORY, "--weights", weights, "--normalize", _normalize_option(kind),
                  *data, "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["acc.clean"] == plain
    result = _cli("evaluate", out, "--data-root", data_root, "--limit-test", 500, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["acc.clean"] == plain
    meta = json.loads((out / "meta.json").read_text())
    assert (
        meta["model"]["name"] == FACTORY and meta["model"]["mean"] == [mean] and meta["model"]["std"] == [std]
    )


def test_api_import_by_path_factory_and_instance(user_net, fmnist, tmp_path):
    kind, net = user_net
    mean, std = FMNIST_STATS if kind == "own" else (0.0, 1.0)
    plain = _plain_accuracy(net, fmnist.test, mean, std)
    normalize = "none" if kind == "none" else ([mean], [std])
    weights = tmp_path / "net.pth"
    torch.save(net.state_dict(), weights)
    by_path = import_model(FACTORY, fmnist, weights, normalize=normalize)
    by_class = import_model(ResidualCNN, fmnist, weights, normalize=normalize)
    by_instance = import_model(net, fmnist, normalize=normalize)  # the module's own weights
    for model in (by_path, by_class, by_instance):
        assert accuracy(model, fmnist.test) == plain
    assert by_instance.net is not net  # a copy: the user's module is left alone
    save_checkpoint(tmp_path / "ck", by_instance)
    reloaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta["model"]["name"] == "tests.user_models:ResidualCNN"
    assert accuracy(reloaded, fmnist.test) == plain


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel / DDP
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3},  # Lightning
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile
        lambda sd: {f"module.model.{k}": v for k, v in sd.items()},  # both
    ],
    ids=["module", "lightning", "compile", "module+model"],
)
def test_wrapper_prefixes_are_stripped(wrap, fmnist, tmp_path):
    torch.manual_seed(1)
    source = ResidualCNN()
    torch.save(wrap(source.state_dict()), tmp_path / "w.pth")
    model = import_model(FACTORY, fmnist, tmp_path / "w.pth")
    for k, v in source.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k


def test_a_model_whose_own_names_start_with_model_keeps_them(fmnist):
    wrapped = torch.nn.Sequential()
    wrapped.add_module("model", ResidualCNN())
    state = wrapped.state_dict()  # keys "model.conv1.weight", ... belong to the architecture
    fit_state_dict(wrapped, dict(state))
    assert set(wrapped.state_dict()) == set(state)


def _key_error(state) -> str:
    with pytest.raises(CheckpointError) as info:
        fit_state_dict(ResidualCNN(), state, where="weights w.pth")
    return str(info.value)


def test_each_key_error_is_named():
    good = ResidualCNN().state_dict()
    missing = {k: v for k, v in good.items() if k != "bn2.running_var"}
    message = _key_error(missing)
    assert "missing" in message and "bn2.running_var" in message and "unexpected" not in message
    message = _key_error({**good, "extra.weight": torch.zeros(3)})
    assert "unexpected" in message and "extra.weight" in message and "missing" not in message
    message = _key_error({**good, "conv3.weight": torch.zeros(64, 16, 3, 3)})
    assert "wrong shape: conv3.weight (64, 16, 3, 3) in the file, (32, 16, 3, 3) in the model" in message
    everything = {k: v for k, v in good.items() if k != "conv1.bias"}
    everything.update({"bogus": torch.zeros(1), "conv2.weight": torch.zeros(1, 1, 1, 1)})
    message = _key_error(everything)
    assert all(
        s in message for s in ("missing", "conv1.bias", "unexpected", "bogus", "conv2.weight (1, 1, 1, 1)")
    )


def _random_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=gen)
        for k, s in shapes.items()
    }


@pytest.mark.parametrize("tv_name", list(ZOO))
def test_torchvision_names_and_shapes_map_key_for_key(tv_name):
    """Every torchvision ImageNet key maps onto one zoo key of the same shape, and nothing is left over."""
    with torch.device("meta"):
        spec = ModelSpec(ZOO[tv_name], num_classes=1000, in_channels=3, input_size=224, stem="imagenet")
        zoo = {k: list(v.shape) for k, v in spec.build().net.state_dict().items()}
    names = to_zoo_names(ZOO[tv_name], TORCHVISION[tv_name])
    assert {names[k]: s for k, s in TORCHVISION[tv_name].items()} == zoo


@pytest.mark.parametrize(
    "tv_name", ["resnet18", "resnet50", pytest.param("vgg16_bn", marks=pytest.mark.slow), "mobilenet_v2"]
)
def test_torchvision_state_dicts_load_into_the_zoo(tv_name, tmp_path):
    state = _random_state(TORCHVISION[tv_name])
    path = tmp_path / f"{tv_name}.pth"
    torch.save(state, path)
    spec = ModelSpec(ZOO[tv_name], num_classes=1000, in_channels=3, input_size=32, stem="imagenet")
    model = spec.build()
    report = fit_state_dict(model.net, read_state_dict(path), model_name=ZOO[tv_name], num_classes=1000)
    assert report.torchvision_names and not report.replaced
    loaded = model.net.state_dict()
    names = to_zoo_names(ZOO[tv_name], state)
    for k, v in state.items():
        assert torch.equal(loaded[names[k]], v), k
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 1000)


def test_weights_saved_before_batch_norm_counters_load():
    """Files from before PyTorch 0.4.1 (early torchvision weights) have no num_batches_tracked."""
    state = _random_state(TORCHVISION["resnet18"])
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = ModelSpec("resnet18", num_classes=1000, stem="imagenet").build()
    fit_state_dict(model.net, old, model_name="resnet18", num_classes=1000)
    assert torch.equal(model.net.stem[0].weight, state["conv1.weight"])
    assert model.net.stem[1].num_batches_tracked.item() == 0


def test_head_replacement_names_and_seeds_the_new_head(cifar_small, tmp_path):
    state = _random_state(TORCHVISION["mobilenet_v2"])
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(state, path)
    first = import_model("mobilenetv2", cifar_small, path, stem="imagenet", num_classes=10, seed=3)
    again = import_model("mobilenetv2", cifar_small, path, stem="imagenet", num_classes=10, seed=3)
    other = import_model("mobilenetv2", cifar_small, path, stem="imagenet", num_classes=10, seed=4)
    head = first.net.classifier[3]
    assert head.out_features == 10
    assert torch.equal(head.weight, again.net.classifier[3].weight)
    assert not torch.equal(head.weight, other.net.classifier[3].weight)
    assert torch.equal(first.net.features[0][0].weight, state["features.0.0.weight"])  # the rest is loaded
    with pytest.raises(CheckpointError, match=r"1000 classes.*--num-classes 10"):
        import_model("mobilenetv2", cifar_small, path, stem="imagenet")


def test_cli_head_replacement_reports_the_replaced_keys(cifar_small, data_root, tmp_path):
    torch.save(_random_state(TORCHVISION["resnet18"]), tmp_path / "resnet18.pth")
    dataset = f"npz:{data_root / 'cifar10' / 'cifar10_exact_subset.npz'}"
    args = ["import", "--model", "resnet18", "--stem", "imagenet", "--weights", tmp_path / "resnet18.pth",
            "--dataset", dataset, "--data-root", data_root, "--limit-test", 50,
            "--normalize", "0.485,0.456,0.406,0.229,0.224,0.225"]  # fmt: skip
    result = _cli(*args, "--num-classes", 10, "--out", tmp_path / "ck", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["replaced"] == ["fc.weight", "fc.bias"]
    assert "replaced the classifier head (new, seed 0): fc.weight, fc.bias" in result.stderr
    model, meta = load_checkpoint(tmp_path / "ck")
    assert model.net.fc.out_features == 10 and meta["import"]["torchvision_names"]
    assert meta["model"]["mean"] == [0.485, 0.456, 0.406] and meta["model"]["stem"] == "imagenet"


class _Evil:
    """Unpickling this creates the marker file: what a malicious weights file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_pickle_is_refused_without_running_it(fmnist, tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to unpickle .*system.*nothing in it was run"):
        import_model(FACTORY, fmnist, path)
    assert not marker.exists()
    # the file really is malicious: its pickle calls os.system (read without running it)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    globals_named = [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
    assert any(g.endswith(" system") for g in globals_named), globals_named


def test_whole_pickled_model_is_refused_with_the_fix(fmnist, tmp_path):
    torch.save(ResidualCNN(), tmp_path / "whole.pth")
    with pytest.raises(CheckpointError, match=r"ResidualCNN.*torch\.save\(model\.state_dict\(\)"):
        import_model(FACTORY, fmnist, tmp_path / "whole.pth")


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list, str]]:
    """name -> (extra CLI arguments, expected words of the error)."""
    good = ResidualCNN().state_dict()
    torch.save(good, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    (tmp_path / "random.pth").write_bytes(noise.numpy().tobytes())
    safetensors.torch.save_file(good, str(tmp_path / "good.safetensors"))
    st = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(st[: len(st) - 100])
    torch.save(
        ModelSpec("cnn8", in_channels=1, input_size=28).build().net.state_dict(), tmp_path / "cnn8.pth"
    )
    marker = tmp_path / "marker"
    torch.save({"conv1.weight": _Evil(marker)}, tmp_path / "evil.pth")
    torch.save(ResidualCNN(num_classes=5).state_dict(), tmp_path / "five.pth")
    return {
        "other architecture": (
            ["--weights", tmp_path / "cnn8.pth"],
            "missing (in the model, not in the file)",
        ),
        "class count": (["--weights", tmp_path / "five.pth"], "have 5 classes"),
        "truncated pth": (["--weights", tmp_path / "truncated.pth"], "truncated or damaged"),
        "corrupt pth": (["--weights", tmp_path / "random.pth"], "damaged"),
        "truncated safetensors": (["--weights", tmp_path / "truncated.safetensors"], "damaged or truncated"),
        "unsafe pickle": (["--weights", tmp_path / "evil.pth"], "refusing to unpickle"),
        "normalize channels": (
            ["--weights", tmp_path / "good.pth", "--normalize", "0.5,0.5,0.5,0.2"],
            "has 4 numbers, but 'fashion-mnist' has 1-channel images: give 2, the mean of each channel",
        ),
        "normalize words": (["--weights", tmp_path / "good.pth", "--normalize", "imagenet"], "not 'none'"),
        "missing file": (["--weights", tmp_path / "nope.pth"], "does not exist"),
    }


def test_bad_input_exits_2_and_writes_nothing(data_root, tmp_path):
    for name, (args, words) in _bad_inputs(tmp_path).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        result = _cli("import", "--model", FACTORY, "--dataset", "fashion-mnist", "--data-root", data_root,
                      "--limit-test", 20, *args, "--out", out)  # fmt: skip
        assert result.exit_code == 2, (name, result.output)
        assert words in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.output
        assert not out.exists(), name
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "out").exists()  # not even a temporary folder is left


def test_existing_out_is_kept_unless_overwrite(fmnist, data_root, tmp_path):
    torch.save(ResidualCNN().state_dict(), tmp_path / "w.pth")
    out = tmp_path / "ck"
    out.mkdir()
    (out / "keep").write_text("mine")
    args = ["import", "--model", FACTORY, "--weights", tmp_path / "w.pth", "--dataset", "fashion-mnist",
            "--data-root", data_root, "--limit-test", 20, "--out", out]  # fmt: skip
    result = _cli(*args)
    assert result.exit_code == 2 and "--overwrite" in result.stderr and (out / "keep").exists()
    assert _cli(*args, "--overwrite").exit_code == 0 and not (out / "keep").exists()
    assert load_checkpoint(out)[1]["import"]["sha256"]


def test_api_input_errors(fmnist):
    with pytest.raises(
        ConfigError, match="3 means and 3 standard deviations, but 'fashion-mnist' has 1-channel"
    ):
        import_model(FACTORY, fmnist, normalize=([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]))
    with pytest.raises(ConfigError, match="unknown model 'resnet9'.*cnn8"):
        import_model("resnet9", fmnist)
    with pytest.raises(ConfigError, match="num_classes 5 differs from the 10 classes"):
        import_model(FACTORY, fmnist, num_classes=5)
    with pytest.raises(ConfigError, match="stem 'imagenet' is an option of the zoo's resnet"):
        import_model(FACTORY, fmnist, stem="imagenet")
    with pytest.raises(ConfigError, match="cannot be found again by import path"):
        import_model(lambda num_classes, in_channels: ResidualCNN(num_classes, in_channels), fmnist)


def test_pickle_module_is_not_needed_for_safe_files(tmp_path):
    """safetensors files are read without any unpickler (a pickle opcode stream would fail there)."""
    safetensors.torch.save_file({"a": torch.ones(2)}, str(tmp_path / "plain.bin"))  # sniffed, not by suffix
    assert torch.equal(read_state_dict(tmp_path / "plain.bin")["a"], torch.ones(2))
    (tmp_path / "x.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "x.pth")


def test_an_imported_user_model_prunes_finetunes_adversarially_and_exports(fmnist, data_root, tmp_path):
    """The whole way of a user's own residual CNN: import, channel pruning, PGD fine-tuning, ONNX."""
    net = _train_user_net(fmnist, 0.0, 1.0)
    weights = tmp_path / "net.safetensors"
    safetensors.torch.save_file(net.state_dict(), str(weights))
    data = ["--dataset", "fashion-mnist", "--data-root", data_root, "--limit-train", 600, "--limit-test", 200]
    imported, pruned, tuned, onnx = (tmp_path / n for n in ("ck", "pruned", "tuned", "net.onnx"))
    assert _cli("import", "--model", FACTORY, "--weights", weights, *data, "--out", imported).exit_code == 0

    result = _cli(
        "compress", imported, "--prune", "channel", "--amount", 0.5, *data, "--out", pruned, "--json"
    )
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["params"] < counts["params.before"] and counts["macs"] < counts["macs.before"]

    result = _cli("finetune", pruned, "--objective", "pgd", "--objective-param", "eps=0.1",
                  "--objective-param", "steps=3", "--epochs", 1, "--max-steps-per-epoch", 4,
                  *data, "--out", tuned, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    reloaded, _ = load_checkpoint(tuned)
    assert sum(p.numel() for p in reloaded.parameters()) == counts["params"]  # the cut channels stay cut

    result = _cli(
        "export", tuned, "--format", "onnx", *data, "--calibration-images", 64, "--out", onnx, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["parity_ok"] and onnx.is_file()
