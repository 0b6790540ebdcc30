"""The corruption functions: contracts (shape, range, seeds), severity ordering, agreement with the
per-image reference, MNIST-C specifics and user-supplied frost."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustcompress.corruptions import CORRUPTIONS, SUITES, corrupt, corrupt_quantized, load_frost_images
from robustcompress.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CIFAR_C = SUITES.get("cifar-c")
CIFAR_NAMES = CIFAR_C.names()
SUITE_NAMES = [(suite, name) for suite in SUITES.names() for name in SUITES.get(suite).names()]
# random cifar-c corruptions without a reference draw to compare statistics with, and why
NO_REFERENCE = {"frost": "the reference blends frost photos it does not ship; see test_user_frost_images"}


def _reference():
    spec = importlib.util.spec_from_file_location(
        "reference_corruptions", REPO / "benchmarks" / "reference_corruptions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cifar_u8(data_root) -> np.ndarray:
    """48 exact CIFAR-10 test images, uint8 (N, H, W, C)."""
    return np.load(data_root / "cifar10" / "cifar10_exact_subset.npz")["x_test"][:48]


@pytest.fixture(scope="module")
def cifar(cifar_u8) -> torch.Tensor:
    return torch.from_numpy(cifar_u8).permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def grey28(fmnist) -> torch.Tensor:
    return fmnist.test.x[:12]


def test_the_corruption_registry_is_the_cifar_c_suite():
    assert set(CORRUPTIONS) == set(CIFAR_NAMES)
    assert all(CORRUPTIONS.get(n) is CIFAR_C.get(n) for n in CIFAR_NAMES)
    assert set(NO_REFERENCE) <= set(CIFAR_NAMES)


@pytest.mark.parametrize(("suite", "name"), SUITE_NAMES)
def test_contract_shape_range_and_seeds(suite, name, cifar, grey28):
    c = SUITES.get(suite).get(name)
    for x in (cifar[:6], grey28[:6]):
        for sev in (c.severities[0], c.severities[-1]):
            a = corrupt(x, name, sev, suite=suite, seed=1)
            assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
            assert torch.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
            assert torch.equal(a, corrupt(x, name, sev, suite=suite, seed=1)), "same seed, same output"
            assert not torch.equal(a, x), f"{name} severity {sev} left the images unchanged"
            b = corrupt(x, name, sev, suite=suite, seed=2)
            assert torch.equal(a, b) != c.random, "random corruptions differ between seeds, others do not"
    g = torch.Generator().manual_seed(1)
    assert torch.equal(
        corrupt(cifar[:6], name, c.severities[0], suite=suite, generator=g),
        corrupt(cifar[:6], name, c.severities[0], suite=suite, seed=1),
    )


def test_pixel_change_grows_with_severity_where_the_reference_does(cifar):
    suite = SUITES.get("cifar-c")
    monotone = [n for n in suite.names() if suite.get(n).pixel_monotone]
    assert {"elastic_transform", "frost", "glass_blur", "spatter"}.isdisjoint(monotone)
    for name in monotone:
        change = [(corrupt(cifar, name, s, seed=0) - cifar).abs().mean().item() for s in suite.severities]
        for lo, hi in zip(change, change[1:]):
            # motion blur's severities 3 and 4 change pixels equally in the reference too
            assert hi >= 0.97 * lo, f"{name}: pixel change {change} does not grow with severity"
        assert change[-1] > 1.2 * change[0], f"{name}: {change}"


@pytest.mark.parametrize("name", [n for n in CIFAR_NAMES if not CIFAR_C.get(n).random])
def test_batched_equals_per_image_reference(name, cifar, cifar_u8):
    """Where no randomness is involved, the batched corruption is the per-image one to +-1 grey level.

    (+-1: a value that lands exactly on a grey level truncates either way with float rounding.)
    """
    ref = _reference()
    for sev in (1, 3, 5):
        ours = corrupt_quantized(cifar[:16], name, sev).permute(0, 2, 3, 1).numpy().astype(int)
        theirs = ref.apply(name, cifar_u8[:16], sev).astype(int)
        diff = np.abs(ours - theirs)
        assert diff.max() <= 1 and diff.mean() < 0.15, (
            f"{name} severity {sev}: max {diff.max()}, mean {diff.mean()}"
        )


@pytest.mark.parametrize("name", [n for n in CIFAR_NAMES if CIFAR_C.get(n).random and n not in NO_REFERENCE])
def test_random_corruptions_match_reference_statistics(name, cifar, cifar_u8):
    """Random draws differ, so compare the mean absolute pixel change (within 15% of the reference's)."""
    ref = _reference()
    for sev in (1, 5):
        ours = corrupt_quantized(cifar, name, sev).permute(0, 2, 3, 1).numpy().astype(float)
        theirs = ref.apply(name, cifar_u8, sev).astype(float)
        a, b = np.abs(ours - cifar_u8).mean(), np.abs(theirs - cifar_u8).mean()
        assert abs(a - b) <= 0.15 * b, f"{name} severity {sev}: change {a:.2f} vs reference {b:.2f}"


def test_glass_blur_shuffle_is_the_reference_walk_for_delta_one(cifar, cifar_u8):
    """With sigma -> 0 the blurs vanish: every pixel is one of its up/left neighbours or itself."""
    from robustcompress.corruptions.blur import glass_blur

    x = cifar[:4]
    out = glass_blur(x, {"sigma": 0.0, "delta": 1, "iterations": 1}, torch.Generator().manual_seed(0))
    q = torch.round(x * 255)
    o = torch.round(out * 255)
    cands = torch.stack([q, torch.roll(q, 1, -1), torch.roll(q, 1, -2), torch.roll(q, (1, 1), (-2, -1))])
    inner = (o[..., 2:, 2:] == cands[..., 2:, 2:]).any(0).all(1)  # all channels come from one source
    assert inner.all()
    assert torch.equal(o[..., :2, :], q[..., :2, :]) and torch.equal(o[..., :, :2], q[..., :, :2])


def test_grayscale_and_size_scaling(grey28):
    fog = SUITES.get("cifar-c").get("motion_blur")
    assert fog.params(5, 32) == {"radius": 9, "sigma": 2.5}
    assert fog.params(5, 28) == {"radius": 8, "sigma": 2.5 * 28 / 32}
    assert SUITES.get("cifar-c").get("defocus_blur").params(4, 28)["radius"] == 1  # a disk does not shrink
    assert SUITES.get("cifar-c").get("defocus_blur").params(4, 64)["radius"] == 2
    # colour-only corruptions on grey images: computed on grey RGB, returned as luma
    out = corrupt(grey28, "brightness", 3)
    assert out.shape == grey28.shape
    assert torch.allclose(out, (grey28 + 0.15).clamp(0, 1), atol=1e-5)
    assert torch.allclose(corrupt(grey28, "saturate", 1), grey28, atol=1e-5)  # no colour to scale


def test_mnist_c_specifics(grey28):
    x = grey28
    assert torch.allclose(corrupt(x, "stripe", 1, suite="mnist-c")[..., :7], 1 - x[..., :7])
    edges = corrupt(x, "canny_edges", 1, suite="mnist-c")
    assert set(edges.unique().tolist()) <= {0.0, 1.0} and edges.mean() > 0.02
    moved = corrupt(x, "translate", 1, suite="mnist-c")
    shifts = [torch.roll(x[0], (dy, dx), (-2, -1)) for dy in (-3, 3) for dx in (-3, 3)]
    assert any(torch.allclose(moved[0, :, 3:-3, 3:-3], s[:, 3:-3, 3:-3], atol=1e-5) for s in shifts)
    # HSV value + 0.5 on grey images is + 0.5 on the grey level
    assert torch.allclose(corrupt(x, "brightness", 1, suite="mnist-c"), (x + 0.5).clamp(0, 1), atol=1e-5)
    assert SUITES.get("mnist-c").severities == (1,)


def test_user_frost_images(tmp_path, cifar):
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(100, 255, (300, 400, 3), dtype=np.uint8)).save(
            tmp_path / f"frost{i}.png"
        )
    photos = load_frost_images([tmp_path / "frost0.png", tmp_path / "frost1.png"])
    assert photos[0].shape == (3, 60, 80)
    a = corrupt(cifar[:4], "frost", 3, frost_images=photos)
    b = corrupt(cifar[:4], "frost", 3)
    assert not torch.equal(a, b)
    # severity 3 is image * 0.9 + frost * 0.4: with two flat grey photos every image gets one of two
    for i, level in enumerate((40, 160)):
        Image.fromarray(np.full((300, 400, 3), level, dtype=np.uint8)).save(tmp_path / f"flat{i}.png")
    flat = load_frost_images([tmp_path / "flat0.png", tmp_path / "flat1.png"])
    out = corrupt(cifar, "frost", 3, frost_images=flat)
    expected = [(0.9 * cifar + 0.4 * level / 255).clamp(0, 1) for level in (40, 160)]
    picked = [(out - e).flatten(1).abs().amax(1) < 1e-5 for e in expected]
    assert (picked[0] ^ picked[1]).all() and picked[0].any() and picked[1].any()
    with pytest.raises(DataError, match="too small"):
        corrupt(cifar[:4], "frost", 3, frost_images=load_frost_images([tmp_path / "frost0.png"], scale=0.05))
    with pytest.raises(DataError, match="cannot read frost image"):
        load_frost_images([tmp_path / "missing.png"])


def test_bad_input_is_refused(cifar):
    with pytest.raises(ConfigError, match="unknown corruption"):
        corrupt(cifar, "rain", 1)
    with pytest.raises(ConfigError, match="severity 6"):
        corrupt(cifar, "fog", 6)
    with pytest.raises(DataError, match="float images"):
        corrupt(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "fog", 1)
    with pytest.raises(DataError, match="channels"):
        corrupt(torch.zeros(2, 4, 32, 32), "fog", 1)
    with pytest.raises(ConfigError, match="unknown corruption suite"):
        corrupt(cifar, "fog", 1, suite="imagenet-c")


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "pixelate"])
def test_cpu_sub_blocks_equal_one_call_on_the_whole_block(name, cifar):
    """corrupt_quantized runs these in sub-blocks on the CPU (128 images at 32x32, 160 at 27x29):
    the generator's stream must give every image what one call on the whole block gives it."""
    from robustcompress.corruptions import quantize_uint8
    from robustcompress.corruptions.suites import chunk_generator

    tiled = cifar.repeat(6, 1, 1, 1)[:270]  # sub-blocks of 128, 128, 14
    for x in (tiled, tiled[..., :27, :29].contiguous()):  # odd sizes: 2349 values per image
        g = chunk_generator(0, "cifar-c", name, 3, 0, x.device)
        whole = quantize_uint8(corrupt(x, name, 3, generator=g))
        assert torch.equal(corrupt_quantized(x, name, 3), whole)


def test_quantized_corruption_does_not_depend_on_batching(cifar):
    whole = corrupt_quantized(cifar[:20], "gaussian_noise", 3, seed=4)
    assert whole.dtype == torch.uint8
    again = corrupt_quantized(cifar[:20], "gaussian_noise", 3, seed=4)
    assert torch.equal(whole, again)
    many = torch.rand(1500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    at_once = corrupt_quantized(many, "gaussian_noise", 3, seed=4)
    in_blocks = torch.cat(
        [
            corrupt_quantized(many[:1000], "gaussian_noise", 3, seed=4),
            corrupt_quantized(many[1000:], "gaussian_noise", 3, seed=4, start=1000),
        ]
    )
    assert torch.equal(at_once, in_blocks)
    with pytest.raises(ConfigError, match="multiple of 1000"):
        corrupt_quantized(many[:10], "gaussian_noise", 3, start=500)
    # truncation, as the released files: exact grey levels survive a no-op corruption
    same = corrupt_quantized(cifar[:5], "contrast", 1)
    assert same.dtype == torch.uint8
    from robustcompress.corruptions import quantize_uint8

    assert torch.equal(quantize_uint8(cifar[:5]), torch.round(cifar[:5] * 255).to(torch.uint8))
    assert torch.equal(
        quantize_uint8(torch.tensor([0.999 / 255 * 200])), torch.tensor([199], dtype=torch.uint8)
    )
