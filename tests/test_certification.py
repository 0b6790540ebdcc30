"""Certification: randomized smoothing (CERTIFY, PREDICT), semantic PCA, transformation families,
the `certified` evaluation, the `certify` command and the `gaussian` training objective."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustcompress.certification import TRANSFORMS, make_family, register_transform
from robustcompress.certification.semantic import certify_semantic, min_samples
from robustcompress.certification.smoothing import ABSTAIN, Smooth, lower_confidence_bound, radius_cap
from robustcompress.checkpoint import save_checkpoint
from robustcompress.cli import main
from robustcompress.data.types import ImageData
from robustcompress.errors import ConfigError
from robustcompress.evaluation import EVALUATIONS
from robustcompress.evaluation.certified import CertifiedConfig, run_certified
from robustcompress.training import make_objective

DATA_META = {"data": {"dataset": "fashion-mnist"}}


class Constant(nn.Module):
    """Always predicts `cls` (of 10 classes), whatever the input."""

    def __init__(self, cls: int):
        super().__init__()
        self.cls = cls
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return F.one_hot(torch.full((len(x),), self.cls), 10).float().to(x.device)


class Counting(nn.Module):
    """Counts the forward passes of a wrapped model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x)


def images(labels: list[int], size: int = 28, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.rand(len(labels), 1, size, size, generator=g), torch.tensor(labels))


def cfg(**kw) -> CertifiedConfig:
    return CertifiedConfig.parse(kw)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------------------------- smoothing


def test_known_bounds_match_scipy():
    assert lower_confidence_bound(990, 1000, 0.001) == pytest.approx(0.976036, abs=1e-6)
    for k, n, a in [(990, 1000, 0.001), (57, 100, 0.01), (1, 10, 0.05), (100_000, 100_000, 0.001)]:
        assert lower_confidence_bound(k, n, a) == pytest.approx(
            binomtest(k, n).proportion_ci(1 - 2 * a, "exact").low, rel=1e-9
        )
    assert lower_confidence_bound(0, 50, 0.001) == 0.0
    for n, factor in [(100, 1.50), (1000, 2.46), (10_000, 3.20), (100_000, 3.81)]:
        assert radius_cap(1.0, n, 0.001) == pytest.approx(factor, abs=0.005)


def test_always_right_model_certifies_every_point_at_the_radius_cap():
    data = images([3] * 7)
    sigma, n, alpha = 0.5, 400, 0.001
    m = run_certified(
        Constant(3),
        data,
        cfg(sigma=sigma, n=n, n0=20, alpha=alpha, batch_size=1000, radii=[0, 1.0]),
        torch.device("cpu"),
    )
    cap = sigma * norm.ppf(alpha ** (1 / n))
    assert m["cert.smooth.s0.5.radius_cap"] == pytest.approx(cap, rel=1e-12)
    assert m["cert.smooth.s0.5.r0"] == 1.0 and m["cert.smooth.s0.5.acc"] == 1.0
    assert m["cert.smooth.s0.5.abstain"] == 0.0
    assert m["cert.smooth.s0.5.r1"] == (1.0 if cap >= 1.0 else 0.0)
    certs = Smooth(Constant(3), sigma, batch_size=128).certify(
        data.x, 20, n, alpha, torch.Generator().manual_seed(0)
    )
    assert all(c.prediction == 3 and c.count == n for c in certs)
    assert [c.radius for c in certs] == pytest.approx([cap] * 7, rel=1e-12)


def test_constant_model_certifies_only_its_class(fmnist):
    data = fmnist.test.subset(range(60))
    m = run_certified(Constant(2), data, cfg(sigma=0.25, n=200, n0=10, n_examples=None), torch.device("cpu"))
    share = (data.y == 2).float().mean().item()
    assert 0 < share < 1
    assert m["cert.smooth.s0.25.r0"] == pytest.approx(share)
    assert m["cert.smooth.s0.25.acc"] == pytest.approx(share)
    from robustcompress.evaluation.certified import smoothing_rows

    rows = smoothing_rows(Constant(2), data, cfg(sigma=0.25, n=200, n0=10, n_examples=None), 0.25)
    cap = radius_cap(0.25, 200, 0.001)
    for r in rows:  # the constant answer is certified everywhere, and right only on its class
        assert (r["predict"], r["correct"]) == (2, int(r["label"] == 2))
        assert r["radius"] == pytest.approx(cap, rel=1e-12)
    assert m["cert.smooth.s0.25.r0.5"] == 0.0 and cap < 0.5  # n = 200 cannot certify radius 0.5


def test_predict_abstains_on_a_tie_and_answers_a_clear_majority():
    class Half(nn.Module):  # class 0 for images whose noisy first pixel is positive, else class 1
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], 1)

    x = torch.zeros(1, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert Smooth(Half(), 0.5).predict(x, 1000, 0.001, g) == [ABSTAIN]
    assert Smooth(Half(), 0.5).predict(x + 1.0, 1000, 0.001, g) == [0]


def test_certification_of_a_trained_model_is_repeatable_per_seed(trained_cnn8):
    model, splits = trained_cnn8
    data = splits.test.subset(range(40))
    c = dict(sigma=0.25, n=100, n0=10, n_examples=4, batch_size=250)
    from robustcompress.evaluation.certified import smoothing_rows

    def rows(seed):
        return [
            {k: v for k, v in r.items() if k != "time"}
            for r in smoothing_rows(model, data, cfg(seed=seed, **c), 0.25)
        ]

    first, again, other = rows(0), rows(0), rows(1)
    assert first == again
    assert [r["count"] for r in first] != [r["count"] for r in other]
    assert [r["idx"] for r in first] == [0, 10, 20, 30]  # spread evenly over the test set
    # the noisy majority of a decent model mostly agrees with the label
    assert sum(r["correct"] for r in first) >= 2


# --------------------------------------------------------------------------------------------- PCA


def test_pca_decisions_use_the_clopper_pearson_bound_of_the_observed_counts():
    @register_transform("test_coin")
    def coin(x, generator, p: float = 0.9):
        """Marks pixel (0, 0) with a uniform draw: the test model is right when it is below p."""
        u = torch.rand(len(x), generator=generator, device=generator.device).to(x.device)
        out = x.clone()
        out[:, 0, 0, 0] = u
        return out

    class RightBelow(nn.Module):
        def forward(self, x):
            right = x[:, 0, 0, 0] < 0.9
            return F.one_hot(torch.where(right, 1, 0), 2).float()

    fam = make_family("test_coin", p=0.9)
    assert "uniform draw" in fam.describe() and "p=0.9" in fam.describe()
    x, y = torch.zeros(6, 1, 8, 8), torch.ones(6, dtype=torch.long)
    res = certify_semantic(RightBelow(), x, y, fam, 300, 0.15, 0.01, torch.Generator().manual_seed(0), 256)
    ks = [r.correct for r in res]
    assert len(set(ks)) > 1 and all(240 <= k <= 290 for k in ks)  # about 0.9 * 300
    for r in res:
        assert r.p_lower == pytest.approx(beta.ppf(0.01, r.correct, 300 - r.correct + 1), rel=1e-12)
        assert r.certified == (r.p_lower >= 0.85)


def test_identity_family_gives_pca_equal_to_clean_accuracy(trained_cnn8):
    from robustcompress.evaluation import accuracy

    model, splits = trained_cnn8
    data = splits.test.subset(range(50))
    eps, alpha = 0.05, 0.001
    n = min_samples(eps, alpha)
    assert n == math.ceil(math.log(alpha) / math.log(1 - eps)) == 135
    m = run_certified(
        model,
        data,
        cfg(method="semantic", transforms=["identity"], n=n, eps=eps, alpha=alpha, n_examples=None),
        torch.device("cpu"),
    )
    clean = accuracy(model, data)
    assert m["cert.pca.identity"] == pytest.approx(clean)
    assert m["cert.pca.identity.acc"] == pytest.approx(clean)
    below = run_certified(
        model,
        data,
        cfg(method="semantic", transforms=["identity"], n=n - 1, eps=eps, alpha=alpha, n_examples=None),
        torch.device("cpu"),
    )
    assert below["cert.pca.identity"] == 0.0  # one sample short: no input can pass


def test_pca_under_rotation_is_at_most_the_accuracy_under_rotation(trained_cnn8):
    model, splits = trained_cnn8
    data = splits.test.subset(range(30))
    m = run_certified(
        model,
        data,
        cfg(method="semantic", transforms=["rotation:30", "brightness"], n=150, n_examples=None),
        torch.device("cpu"),
    )
    for fam in ("rotation:30", "brightness"):
        assert 0 <= m[f"cert.pca.{fam}"] <= m[f"cert.pca.{fam}.acc"] + 1e-9
    assert m["cert.pca.rotation:30.acc"] < 1.0  # 30 degree turns cost a cnn8 some accuracy
    assert (m["cert.pca.n"], m["cert.pca.eps"], m["cert.pca.alpha"]) == (150, 0.05, 0.001)


# --------------------------------------------------------------------------------------------- transforms

SPECS = [
    "identity",
    "rotation",
    "translation",
    "scaling",
    "brightness",
    "contrast",
    "gaussian_blur",
    "corruption:fog:3",
    "corruption:gaussian_noise:2",
    "rotation:20+brightness:0.3",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", [(5, 3, 32, 32), (4, 1, 28, 24)])
def test_transformations_keep_shape_and_range_and_follow_the_seed(spec, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    fam = make_family(spec)
    a = fam.sample(x, torch.Generator().manual_seed(0))
    b = fam.sample(x, torch.Generator().manual_seed(0))
    c = fam.sample(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    if spec == "identity":
        assert torch.equal(a, x) and torch.equal(c, x)
    else:
        assert not torch.equal(a, c) and not torch.equal(a, x)
    assert all(part in fam.describe() for part in spec.split("+"))  # names and distributions, for reports


def test_each_image_gets_its_own_draw_and_zero_width_families_are_the_identity():
    x = torch.zeros(8, 1, 9, 9)
    x[:, :, 4, 4] = 1  # a dot at the centre
    moved = make_family("translation", pixels=2).sample(x, torch.Generator().manual_seed(0))
    spots = [tuple(torch.nonzero(m[0]).tolist()[0]) for m in moved]
    assert all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in spots) and len(set(spots)) > 2
    bright = make_family("brightness", brightness=0.3).sample(
        torch.full((6, 1, 8, 8), 0.5), torch.Generator()
    )
    offsets = bright.mean((1, 2, 3))
    assert len(set(offsets.tolist())) == 6 and ((offsets - 0.5).abs() <= 0.3 + 1e-6).all()
    y = torch.rand(3, 3, 12, 10)
    for spec, kw in [
        ("rotation", {"degrees": 0}),
        ("scaling", {"scale": 0}),
        ("gaussian_blur", {"sigma": 0}),
        ("contrast", {"contrast": 0}),
        ("translation", {"pixels": 0}),
    ]:
        assert torch.allclose(make_family(spec, **kw).sample(y, torch.Generator()), y, atol=1e-5), spec


def test_affine_warps_turn_about_the_centre_of_non_square_images():
    from robustcompress.certification.transforms import _affine

    x = torch.rand(2, 1, 10, 14)
    half_turn = -torch.eye(2, dtype=torch.float64)[None].repeat(2, 1, 1)
    assert torch.allclose(
        _affine(x, half_turn, torch.zeros(2, 2, dtype=torch.float64)), x.flip(-1, -2), atol=1e-5
    )
    shift = torch.tensor([[-3.0, 0.0], [0.0, -2.0]], dtype=torch.float64)  # right by 3; down by 2
    moved = _affine(x, torch.eye(2, dtype=torch.float64)[None].repeat(2, 1, 1), shift)
    assert (
        torch.allclose(moved[0, 0, :, 3:], x[0, 0, :, :-3], atol=1e-5)
        and moved[0, 0, :, :3].abs().max() < 1e-5
    )
    assert torch.allclose(moved[1, 0, 2:], x[1, 0, :-2], atol=1e-5) and moved[1, 0, :2].abs().max() < 1e-5


def test_unknown_transformations_and_parameters_are_refused():
    with pytest.raises(ConfigError, match="rotation"):
        make_family("rotate")
    with pytest.raises(ConfigError, match="fog"):
        make_family("corruption:fogg:3")
    with pytest.raises(ConfigError, match="degrees"):
        make_family("rotation", angle=3)
    with pytest.raises(ConfigError):
        make_family("scaling", scale=-0.1)
    assert "corruption" in TRANSFORMS


# --------------------------------------------------------------------------------------------- config + CLI


def test_config_validation_names_the_problem():
    run = EVALUATIONS.get("certified")
    assert run.config_cls is CertifiedConfig
    for bad in [dict(sigma=0), dict(sigma=[0.25, -1]), dict(alpha=0), dict(alpha=1.0), dict(eps=1.5)]:
        with pytest.raises(ConfigError):
            cfg(**bad)
    with pytest.raises(ConfigError, match="n0"):
        cfg(n=50, n0=100).validate_all()
    with pytest.raises(ConfigError, match="transformation"):
        cfg(method="semantic", transforms=["warp"]).validate_all()


@pytest.fixture(scope="module")
def checkpoint(trained_cnn8, tmp_path_factory):
    model, _ = trained_cnn8
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "cnn8", copy.deepcopy(model), DATA_META)


@pytest.fixture(scope="module")
def int8_checkpoint(trained_cnn8, tmp_path_factory):
    from robustcompress.compression.quantization.int8 import Int8Model
    from tests.test_quant_helpers import run_stage, small_splits

    model, splits = trained_cnn8
    q = run_stage(copy.deepcopy(model), small_splits(splits), "int8", calibration_images=128)
    assert isinstance(q, Int8Model)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "int8", q, DATA_META), q


def test_certify_runs_on_an_int8_model(int8_checkpoint, data_root, trained_cnn8):
    path, q = int8_checkpoint
    args = [
        path,
        "--data-root",
        data_root,
        "--limit-test",
        50,
        "--sigma",
        "0.12",
        "--n",
        100,
        "--n0",
        10,
        "--n-examples",
        5,
        "--batch-size",
        250,
        "--radii",
        "0,0.1",
        "--json",
    ]
    res = invoke("certify", *args)
    assert res.exit_code == 0, res.output
    import json

    m = json.loads(res.stdout)
    assert m["cert.smooth.s0.12.radius_cap"] == pytest.approx(radius_cap(0.12, 100, 0.001))
    assert (m["cert.smooth.n"], m["cert.smooth.n0"], m["cert.smooth.n_examples"]) == (100, 10, 5)
    # the command's figures are the library's on the same model, data and seed
    _, splits = trained_cnn8
    direct = run_certified(
        q,
        splits.test.subset(range(50)),
        cfg(sigma=0.12, n=100, n0=10, n_examples=5, batch_size=250, radii=[0, 0.1]),
        torch.device("cpu"),
    )
    assert {k: v for k, v in m.items() if "seconds" not in k} == pytest.approx(
        {k: v for k, v in direct.items() if "seconds" not in k}
    )
    assert m["cert.smooth.s0.12.r0"] >= 0.4  # int8 cnn8 at ~80% clean keeps most inputs under light noise
    table = invoke("certify", *args[:-1])
    assert "radius cap" in table.stdout and "n0 = 10" in table.stdout and "alpha = 0.001" in table.stdout


def test_per_example_file_is_written_and_resumed(trained_cnn8, checkpoint, data_root, tmp_path):
    out = tmp_path / "rows.tsv"
    args = [
        "certify",
        checkpoint,
        "--data-root",
        data_root,
        "--limit-test",
        60,
        "--sigma",
        "0.25",
        "--n",
        100,
        "--n0",
        10,
        "--n-examples",
        6,
        "--batch-size",
        100,
        "--per-example",
        out,
        "--json",
    ]
    assert invoke(*args).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[1].split("\t")[:4] == ["idx", "label", "predict", "radius"]
    assert [ln.split("\t")[0] for ln in lines[2:]] == ["0", "10", "20", "30", "40", "50"]

    def strip_time(text):
        return [ln.rsplit("\t", 1)[0] for ln in text.splitlines()]

    # a run killed in the middle of a row: three rows and a torn fourth
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:7])
    assert invoke(*args).exit_code == 0
    assert strip_time(out.read_text()) == strip_time("\n".join(lines))
    # the resumed run certified only the missing inputs
    model, splits = trained_cnn8
    counting = Counting(model)
    c = cfg(sigma=0.25, n=100, n0=10, n_examples=6, batch_size=100)
    part = tmp_path / "part.tsv"
    part.write_text("\n".join(lines[:5]) + "\n")
    run_certified(counting, splits.test.subset(range(60)), c, torch.device("cpu"), per_example=part)
    assert counting.calls == 3 * 2  # 3 inputs, one selection and one estimation batch each
    # other parameters are refused rather than mixed into the file
    res = invoke(*[a if a != "0.25" else "0.5" for a in args])
    assert res.exit_code == 2 and "other parameters" in res.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sigma", "0"], "sigma"),
        (["--sigma", "-0.25"], "sigma"),
        (["--n", "50", "--n0", "100"], "n0"),
        (["--alpha", "0"], "alpha"),
        (["--alpha", "1"], "alpha"),
        (["--transforms", "rotation", "--eps", "0"], "eps"),
        (["--transforms", "rotation", "--eps", "1.2"], "eps"),
        (["--transforms", "rotation,spin"], "spin"),
        (["--dataset", "mnist"], "fashion-mnist"),
    ],
)
def test_bad_input_exits_2_with_a_message(checkpoint, data_root, extra, message):
    res = invoke(
        "certify",
        checkpoint,
        "--data-root",
        data_root,
        "--limit-test",
        20,
        "--n",
        100,
        "--n0",
        10,
        "--n-examples",
        2,
        *extra,
    )
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and message in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------------------------- objective


def test_gaussian_objective_trains_on_noise_and_its_consistency_term_vanishes_for_equal_predictions():
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    constant = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with torch.no_grad():
        constant[1].weight.zero_()  # logits = bias: the same on every noisy copy
        constant[1].bias.copy_(torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0]))
    plain = make_objective("gaussian", sigma=0.25)
    loss, _ = plain(constant, x, y)
    ce = F.cross_entropy(constant(x), y)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    reg = make_objective("gaussian", sigma=0.25, consistency_weight=10.0, m=3)
    loss_reg, logits = reg(constant, x, y)
    p = F.softmax(constant[1].bias, 0)
    entropy = -(p * p.log()).sum()
    assert loss_reg.item() == pytest.approx(ce.item() + 0.5 * entropy.item(), rel=1e-5)  # KL = 0
    assert logits.shape == (4, 5)
    # on a model that reads its input, the noise changes the loss and the seed fixes it
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    a = make_objective("gaussian", sigma=0.5, seed=1)(net, x, y)[0]
    b = make_objective("gaussian", sigma=0.5, seed=1)(net, x, y)[0]
    assert a.item() == b.item() and a.item() != pytest.approx(F.cross_entropy(net(x), y).item(), rel=1e-6)
    with pytest.raises(ConfigError):
        make_objective("gaussian", sigma=-1)
    with pytest.raises(ConfigError):
        make_objective("gaussian", consistency_weight=1.0, m=1)
