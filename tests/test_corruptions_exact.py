"""The fast paths that must equal a slower exact one: the torch JPEG codec against Pillow's
libjpeg, and the alias-table Poisson sampler of shot noise against the Poisson distribution."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from robustcompress.corruptions import SUITES, corrupt, corrupt_quantized
from robustcompress.corruptions._jpeg import LUMA_TABLE, quant_table
from robustcompress.corruptions.digital import jpeg_compression, jpeg_round_trip
from robustcompress.corruptions.noise import poisson_on_grid, shot_noise
from robustcompress.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SUITE_QUALITIES = (80, 65, 58, 50, 40)


@pytest.fixture(scope="module")
def cifar_u8(data_root) -> torch.Tensor:
    """64 exact CIFAR-10 test images, uint8 (N, 3, 32, 32)."""
    x = np.load(data_root / "cifar10" / "cifar10_exact_subset.npz")["x_test"][:64]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------- JPEG


@pytest.mark.parametrize("quality", (*SUITE_QUALITIES, 1, 95, 100))
def test_torch_jpeg_equals_pillow_on_cifar(quality, cifar_u8):
    ours = jpeg_round_trip(cifar_u8, quality, "torch")
    assert ours.dtype == torch.uint8 and ours.shape == cifar_u8.shape
    assert torch.equal(ours, jpeg_round_trip(cifar_u8, quality, "pillow"))


def test_torch_jpeg_equals_pillow_on_grey_odd_sizes_and_noise(fmnist, cifar_u8):
    grey = torch.round(fmnist.test.x[:32] * 255).to(torch.uint8)  # 28x28, one luminance plane
    noise = torch.randint(
        0, 256, (8, 3, 27, 45), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    odd = cifar_u8[:16, :, :23, :31].contiguous()  # partial blocks and chroma samples on both axes
    for images in (grey, noise, odd):
        for quality in (80, 40):
            assert torch.equal(jpeg_round_trip(images, quality), jpeg_round_trip(images, quality, "pillow"))


def test_jpeg_codec_choice_and_tables(cifar_u8):
    x = cifar_u8[:8].float() / 255
    g = torch.Generator().manual_seed(0)
    torch_out = jpeg_compression(x, {"quality": 58}, g)
    assert torch.equal(torch_out, jpeg_compression(x, {"quality": 58, "codec": "pillow"}, g))
    assert torch.equal(torch_out, corrupt(x, "jpeg_compression", 3))
    with pytest.raises(ConfigError, match="unknown JPEG codec"):
        jpeg_compression(x, {"quality": 58, "codec": "libjpeg"}, g)
    assert quant_table(50, chroma=False) == list(LUMA_TABLE)
    assert quant_table(100, chroma=True) == [1] * 64
    assert max(quant_table(1, chroma=False)) == 255  # baseline tables clamp to 8 bits


@pytest.mark.parametrize("suite", SUITES.names())
def test_empty_batches_stay_empty(suite):
    s = SUITES.get(suite)
    for channels in (1, 3):
        x = torch.zeros(0, channels, 32, 32)
        for name in s.names():
            out = corrupt(x, name, s.severities[-1], suite=suite)
            assert out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression"])
def test_pil_based_corruptions_equal_the_per_image_reference_exactly(name, cifar_u8):
    """pixelate (PIL BOX, 8-bit passes) and JPEG (libjpeg) match the per-image PIL code pixel for pixel."""
    spec = importlib.util.spec_from_file_location(
        "reference_corruptions", REPO / "benchmarks" / "reference_corruptions.py"
    )
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    x = cifar_u8[:32].float() / 255
    for severity in (1, 2, 3, 4, 5):
        ours = corrupt_quantized(x, name, severity).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(ours, ref.apply(name, cifar_u8[:32].permute(0, 2, 3, 1).numpy(), severity))


# --------------------------------------------------------------------------------------------- shot noise


def _clamped_poisson_pmf(rate: float, top: int) -> np.ndarray:
    """P(min(Poisson(rate), top) = k) for k = 0..top."""
    pmf = stats.poisson.pmf(np.arange(top), rate)
    return np.append(pmf, stats.poisson.sf(top - 1, rate))


@pytest.mark.parametrize("lam", (500, 50, 3, 7.5))
def test_alias_sampler_is_the_clamped_poisson_distribution(lam):
    """Per grey level: mean and variance of the counts, and a chi-square test of their histogram."""
    top = int(np.ceil(lam))
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for level in (0, 1, 37, 128, 255):
        out = poisson_on_grid(torch.full((n,), float(level)), lam, g)
        counts = torch.round(out.double() * lam).long().numpy()  # out = min(k, top) / lam, clamped to 1
        assert counts.min() >= 0 and counts.max() <= top
        rate = level / 255 * lam
        pmf = _clamped_poisson_pmf(rate, top)
        k = np.arange(top + 1)
        mean, var = (pmf * k).sum(), (pmf * k**2).sum() - (pmf * k).sum() ** 2
        if level == 0:
            assert (counts == 0).all()
            continue
        assert abs(counts.mean() - mean) < 5 * np.sqrt(var / n), (lam, level, counts.mean(), mean)
        assert abs(counts.var() / var - 1) < 0.03, (lam, level, counts.var(), var)
        hist = np.bincount(counts, minlength=top + 1)
        expected = pmf * n
        keep = expected >= 5  # pool the sparse tails into one bin
        obs = np.append(hist[keep], hist[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        obs, exp = (obs, exp) if exp[-1] >= 5 else (obs[:-1], exp[:-1] * obs[:-1].sum() / exp[:-1].sum())
        p = stats.chisquare(obs, exp).pvalue
        assert p > 1e-4, (lam, level, p)


def test_shot_noise_grid_path_matches_torch_poisson(cifar_u8):
    """On-grid images take the alias tables, off-grid ones torch.poisson: same statistics."""
    x = cifar_u8.float() / 255
    g = torch.Generator().manual_seed(3)
    on_grid = shot_noise(x, {"lam": 50}, g)
    assert torch.equal(on_grid, shot_noise(x, {"lam": 50}, torch.Generator().manual_seed(3)))
    assert not torch.equal(on_grid, shot_noise(x, {"lam": 50}, torch.Generator().manual_seed(4)))
    assert on_grid.dtype == x.dtype and on_grid.min() >= 0 and on_grid.max() <= 1
    reference = (torch.poisson(x * 50, generator=torch.Generator().manual_seed(3)) / 50).clamp(0, 1)
    for a, b in (
        ((on_grid - x).abs().mean(), (reference - x).abs().mean()),
        (on_grid.mean(), reference.mean()),
    ):
        assert abs(a - b) < 0.01 * b
    # off the 8-bit grid (or outside [0, 1]): exactly torch.poisson with the caller's generator
    for off in ((x + 0.3 / 255).clamp(0, 1), x * 1.2):
        expected = (torch.poisson(off * 50, generator=torch.Generator().manual_seed(5)) / 50).clamp(0, 1)
        assert torch.equal(shot_noise(off, {"lam": 50}, torch.Generator().manual_seed(5)), expected)


# --------------------------------------------------------------------------------------------- motion blur


def test_motion_blur_by_runs_equals_the_gather_path(cifar_u8):
    """One thread adds slices over runs of images sorted by angle; several threads gather per tap."""
    from robustcompress.corruptions import _ops

    x = cifar_u8[:40].float() / 255
    angles = torch.rand(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 90 - 45
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        grouped = _ops.motion_blur(x, 9, 2.5, angles)
        torch.set_num_threads(2)
        gathered = _ops.motion_blur(x, 9, 2.5, angles)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(grouped, gathered)
