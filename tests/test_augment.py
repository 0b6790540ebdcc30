import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from robustcompress.cli import main as cli
from robustcompress.errors import ConfigError
from robustcompress.models import ModelSpec
from robustcompress.training import TrainConfig, fit
from robustcompress.training.augment import augment_batch


def _images(cifar_small, n=64):
    return cifar_small.train.x[:n].float()


def test_flip_mirrors_about_half_the_images(cifar_small):
    x = _images(cifar_small)
    out = augment_batch(x, ["flip"], torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 <= sum(mirrored) <= 48 and sum(same) >= 16


def test_crop_is_a_window_of_the_zero_padded_image(cifar_small):
    x = _images(cifar_small, 32)
    out = augment_batch(x, ["crop"], torch.Generator().manual_seed(1), padding=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = set()
    for o, p in zip(out, padded):
        windows = [(dy, dx) for dy in range(9) for dx in range(9)]
        hits = [(dy, dx) for dy, dx in windows if torch.equal(o, p[:, dy : dy + 32, dx : dx + 32])]
        assert hits, "every crop is a 32x32 window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 8  # shifts are drawn per image


def test_augmentation_is_repeatable_and_seeded(cifar_small):
    x = _images(cifar_small)
    a = augment_batch(x, ["crop", "flip"], torch.Generator().manual_seed(5))
    b = augment_batch(x, ["crop", "flip"], torch.Generator().manual_seed(5))
    c = augment_batch(x, ["crop", "flip"], torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fit_with_augmentation_trains_and_changes_the_run(fmnist):
    def run(augment):
        torch.manual_seed(0)
        model = ModelSpec.for_data("cnn8", fmnist.info, width=0.25).build()
        cfg = TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=6, augment=augment)
        result = fit(model, fmnist, cfg, device="cpu", seed=0, progress=False)
        return model, result

    plain, _ = run([])
    aug, result = run(["crop", "flip"])
    again, _ = run(["crop", "flip"])
    assert math.isfinite(result.history[-1]["train_loss"])
    weights = lambda m: list(m.state_dict().values())  # noqa: E731
    assert all(torch.equal(p, q) for p, q in zip(weights(aug), weights(again)))
    assert not all(torch.equal(p, q) for p, q in zip(weights(aug), weights(plain)))


def test_unknown_augmentation_is_a_clear_error(data_root):
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.parse({"augment": ["rotate"]})
    result = CliRunner().invoke(
        cli,
        ["train", "--data-root", str(data_root), "--limit-train", "100", "--augment", "rotate"],
    )
    assert result.exit_code == 2 and "augment" in result.output and "Traceback" not in result.output


def test_cache_keys_leave_out_augmentation_at_its_default():
    # runs cached before augmentation existed keep their keys; an augmented run gets a new one
    assert "augment" not in TrainConfig().key_dict() and "crop_padding" not in TrainConfig().key_dict()
    assert TrainConfig(augment=["flip"]).key_dict()["augment"] == ["flip"]
    assert TrainConfig(crop_padding=2).key_dict()["crop_padding"] == 2
