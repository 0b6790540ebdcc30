import copy

import pytest
import torch
import torch.nn.functional as F

from robustcompress.errors import ConfigError
from robustcompress.models import ModelSpec, build_model, list_models

ZOO = ["cnn8", "resnet18", "resnet34", "resnet50", "vgg11", "vgg16", "vgg19", "mobilenetv2"]


def test_zoo_lists_every_model():
    assert set(ZOO) <= set(list_models())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_model_trains_a_step_and_evaluates(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=channels, input_size=size, width=0.25)
    x, y = torch.rand(4, channels, size, size), torch.tensor([0, 1, 2, 3])
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    changed = [
        k
        for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert changed, "a training step changed no weight"
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_width_multiplier_shrinks_the_model():
    big = sum(p.numel() for p in build_model("resnet18", width=1.0).parameters())
    small = sum(p.numel() for p in build_model("resnet18", width=0.5).parameters())
    assert 0.2 < small / big < 0.3  # parameters scale with width squared


def test_imagenet_stem_downsamples():
    cifar = build_model("resnet18")
    imagenet = build_model("resnet18", stem="imagenet")
    x = torch.rand(1, 3, 64, 64)
    assert cifar.net.stem(x).shape[-1] == 64 and imagenet.net.stem(x).shape[-1] == 16


def test_normalisation_is_the_first_layer():
    model = build_model("cnn8", in_channels=1, input_size=28, mean=[0.5], std=[0.25])
    x = torch.full((1, 1, 28, 28), 0.75)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))


def test_user_model_by_import_path():
    model = build_model("tests.user_models:tiny_net", num_classes=3, in_channels=1, input_size=28)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3)


def test_unknown_model_names_the_choices():
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("resnet19")
    with pytest.raises(ConfigError, match="package.module:factory"):
        build_model("no_such_module:factory")


def test_spec_round_trips_through_json():
    spec = ModelSpec(
        name="vgg11", num_classes=7, in_channels=3, width=0.5, mean=[0.1, 0.2, 0.3], std=[1, 1, 1]
    )
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    with pytest.raises(ConfigError, match="unknown model spec keys"):
        ModelSpec.from_dict({**spec.to_dict(), "depth": 3})
