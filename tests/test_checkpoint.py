import os
import pickle

import pytest
import torch

from robustcompress.checkpoint import (
    STRUCTURES,
    add_structure,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from robustcompress.errors import CheckpointError
from robustcompress.models import build_model


def test_round_trip_gives_identical_outputs(tmp_path):
    model = build_model("resnet18", width=0.25).eval()
    with torch.no_grad():
        model.net.fc.bias.add_(0.3)  # something not at its initial value
    save_checkpoint(tmp_path / "ck", model, {"data": {"dataset": "cifar10"}})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["model"]["name"] == "resnet18" and meta["data"]["dataset"] == "cifar10"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["meta.json", "model.safetensors"]


def test_overwrite_leaves_no_partial_files(tmp_path):
    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    for _ in range(2):
        save_checkpoint(tmp_path / "ck", model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="unpickling"):
        load_checkpoint(evil)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "model.safetensors").write_bytes(pickle.dumps(payload))
    (tmp_path / "ck" / "meta.json").write_text('{"model": {"name": "cnn8"}}')
    with pytest.raises(CheckpointError, match="not safetensors"):
        load_checkpoint(tmp_path / "ck")
    assert not marker.exists()


def test_another_architecture_or_class_count_is_a_clear_error(tmp_path):
    save_checkpoint(
        tmp_path / "ck", build_model("cnn8", num_classes=10, in_channels=1, input_size=28, width=0.25)
    )
    meta_path = tmp_path / "ck" / "meta.json"
    text = meta_path.read_text().replace('"num_classes": 10', '"num_classes": 5')
    meta_path.write_text(text)
    with pytest.raises(CheckpointError, match="5 classes"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="100 classes"):
        check_compatible({"model": {"name": "cnn8", "num_classes": 10, "in_channels": 1}}, 100, 3, "cifar100")


def test_structure_entries_are_replayed(tmp_path):
    @STRUCTURES.register("test_extra_bias")
    def extra_bias(model, params):
        model.register_buffer("extra", torch.zeros(params["size"]))
        return model

    model = build_model("cnn8", in_channels=1, input_size=28, width=0.25)
    model.register_buffer("extra", torch.arange(4.0))
    add_structure(model, "test_extra_bias", size=4)
    save_checkpoint(tmp_path / "ck", model)
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert torch.equal(loaded.extra, torch.arange(4.0))
    assert meta["structure"] == [{"kind": "test_extra_bias", "size": 4}]


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")


def test_a_replay_that_returns_a_new_module_keeps_the_spec(tmp_path):
    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) * 2

    @STRUCTURES.register("test_wrapped")
    def wrap(model, params):
        return Wrapped(model)

    model = Wrapped(build_model("cnn8", in_channels=1, input_size=28, width=0.25))
    from robustcompress.checkpoint import carry_metadata

    carry_metadata(model.inner, model)
    add_structure(model, "test_wrapped")
    save_checkpoint(tmp_path / "a", model)
    loaded, _ = load_checkpoint(tmp_path / "a")
    save_checkpoint(tmp_path / "b", loaded)  # needs the spec carried through the replay
    again, _ = load_checkpoint(tmp_path / "b")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), model.eval()(x))


def test_checkpoint_files_get_the_permissions_of_the_umask(tmp_path):
    """Not the 0o600 that temporary files and safetensors' writer use: others may read a checkpoint
    whenever the umask lets them (a shared results folder)."""
    import os

    from robustcompress.models import build_model

    umask = os.umask(0o022)
    os.umask(umask)
    save_checkpoint(tmp_path / "ck", build_model("cnn8", in_channels=1, input_size=28), {})
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ck").iterdir()}
    assert modes == {"model.safetensors": 0o666 & ~umask, "meta.json": 0o666 & ~umask}
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o777 & ~umask
