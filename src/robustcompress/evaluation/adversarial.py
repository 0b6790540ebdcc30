"""Adversarial robustness: robust accuracy per attack, the per-example worst case over a suite,
accuracy-versus-eps curves, and gradient-masking checks that warn in the results and on the console.

Metric names (eps written by `format_eps`: at most 4 decimals, trailing zeros dropped, so 0.1 ->
"0.1", 8/255 -> "0.0314", 0.5 -> "0.5", 2 -> "2"):
  acc.<attack>_<norm>_<eps>   e.g. acc.pgd_linf_0.1, acc.apgd-t_linf_0.0314
  acc.worst_<norm>_<eps>      examples that survive every attack of the suite
  flag.<check>                a message, only when a gradient-masking check fires
  adv.n_examples, adv.clean_acc, adv.seconds

With `cascade` (the default, as AutoAttack) each attack only re-attacks the examples that every
earlier attack left correctly classified, so acc.<attack> is the running worst case after that
attack; without it every attack runs on all clean-correct examples and acc.<attack> is its own.
White-box attacks always run before black-box ones (square, transfer).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from robustcompress.attacks import ATTACKS, SUITES, attack_parameters, make_attack, make_estimator
from robustcompress.attacks import sanity as checks
from robustcompress.attacks.base import eval_mode
from robustcompress.attacks.estimators import GradientEstimator
from robustcompress.device import model_device
from robustcompress.errors import ConfigError
from robustcompress.evaluation.clean import predict
from robustcompress.evaluation.registry import EvalConfig, EvalContext, Metrics, register_evaluation


def format_eps(eps: float) -> str:
    """Short stable text for an eps in metric names: 0.1 -> '0.1', 8/255 -> '0.0314', 2.0 -> '2'."""
    text = f"{eps:.4f}".rstrip("0").rstrip(".")
    if text in ("0", "-0") and eps != 0:
        text = f"{eps:.2e}"
    return text


def metric_name(attack: str, norm: str, eps: float) -> str:
    return f"acc.{attack}_{norm}_{format_eps(eps)}"


def expand_suite(attacks: Sequence[str] | str, norm: str) -> list[str]:
    """Attack names with suites expanded, white-box first; suite members that lack the norm are dropped."""
    names: list[str] = []
    for item in [attacks] if isinstance(attacks, str) else attacks:
        if item in SUITES:
            names += [a for a in SUITES[item] if norm in ATTACKS.get(a).norms]
        else:
            cls = ATTACKS.get(item)
            if norm not in cls.norms:
                raise ConfigError(f"attack {item!r} supports norm {', '.join(cls.norms)}, not {norm!r}")
            names.append(item)
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no attack to run; give attack names or the suite 'standard'")
    return sorted(names, key=lambda a: not ATTACKS.get(a).uses_gradients)


def large_eps(norm: str, x: torch.Tensor) -> float:
    """An eps whose ball holds the whole [0, 1] box: every image is reachable."""
    return 1.0 if norm == "linf" else math.sqrt(x[0].numel())


@dataclass
class RobustnessReport:
    """What `evaluate_robustness` measured; `metrics()` flattens it into dotted metric names."""

    norm: str
    n_examples: int
    clean_acc: float
    accuracy: dict[float, dict[str, float]] = field(default_factory=dict)  # eps -> attack -> acc
    worst: dict[float, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # attack -> wall time over all eps

    def metrics(self) -> Metrics:
        out: Metrics = {"adv.n_examples": self.n_examples, "adv.clean_acc": self.clean_acc}
        for eps, per_attack in self.accuracy.items():
            for attack, acc in per_attack.items():
                out[metric_name(attack, self.norm, eps)] = acc
            out[metric_name("worst", self.norm, eps)] = self.worst[eps]
        out["adv.seconds"] = round(sum(self.seconds.values()), 3)
        out.update({f"flag.{k}": v for k, v in self.flags.items()})
        return out


def attack_correct(
    attack, x: torch.Tensor, y: torch.Tensor, batch_size: int, progress: Callable[[int], None] | None = None
) -> torch.Tensor:
    """Per example: is the model still right on the attack's adversarial example? (bool, on x's device)"""
    still = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for i in range(0, len(x), batch_size):
        _, pred = attack.perturb(x[i : i + batch_size], y[i : i + batch_size])
        still[i : i + batch_size] = pred == y[i : i + batch_size]
        if progress:
            progress(min(i + batch_size, len(x)))
    return still


def build_attack_params(
    name: str,
    *,
    norm: str,
    steps: int | None,
    step_size: float | None,
    restarts: int,
    seed: int,
    estimator: GradientEstimator,
    surrogate: nn.Module | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The evaluation's shared settings, kept to those the attack accepts, plus per-attack extras."""
    allowed = attack_parameters(ATTACKS.get(name))
    params: dict[str, Any] = {"norm": norm, "restarts": restarts, "seed": seed, "estimator": estimator}
    if steps is not None:
        params["steps"] = steps
    if step_size is not None:
        params["step_size"] = step_size
    if name == "transfer":
        params["surrogate"] = surrogate
        inner = (extra or {}).get("attack", "pgd")
        inner_allowed = attack_parameters(ATTACKS.get(inner))
        params["attack_params"] = {
            k: v
            for k, v in (("steps", steps), ("step_size", step_size))
            if v is not None and k in inner_allowed
        }
    params = {k: v for k, v in params.items() if k in allowed}
    params.update(extra or {})
    return params


def evaluate_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[str] | str = "standard",
    eps: float | Sequence[float] = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    *,
    steps: int | None = None,
    step_size: float | None = None,
    restarts: int = 1,
    batch_size: int = 256,
    estimator: GradientEstimator | str | None = None,
    surrogate: nn.Module | None = None,
    cascade: bool = True,
    sanity: bool = True,
    seed: int = 0,
    attack_params: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> RobustnessReport:
    """Robust accuracy of `model` on (x, y) under each attack and each eps, plus the worst case.

    attacks: names from ATTACKS and/or suite names ("standard"); attack_params: extra keyword
    arguments per attack name (e.g. {"square": {"queries": 1000}}). Returns a RobustnessReport.
    """
    log = log or (lambda msg: None)
    eps_list = sorted({float(e) for e in ([eps] if isinstance(eps, int | float) else eps)})
    if any(e < 0 or not math.isfinite(e) for e in eps_list):
        raise ConfigError(f"eps values must be finite and >= 0; got {eps_list}")
    names = expand_suite(attacks, norm)
    if "transfer" in names and surrogate is None:
        raise ConfigError("the transfer attack needs a surrogate model; set transfer_from (e.g. 'parent')")
    estimator = make_estimator(estimator)
    attack_params = attack_params or {}
    for key in attack_params:
        ATTACKS.get(key)
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    n = len(x)
    with eval_mode(model):
        clean_ok = predict(model, x, batch_size) == y
    report = RobustnessReport(
        norm=norm, n_examples=n, clean_acc=clean_ok.float().mean().item() if n else float("nan")
    )

    def attack(name: str, e: float, **override) -> Any:
        params = build_attack_params(
            name,
            norm=norm,
            steps=steps,
            step_size=step_size,
            restarts=restarts,
            seed=seed,
            estimator=estimator,
            surrogate=surrogate,
            extra={**attack_params.get(name, {}), **override},
        )
        return make_attack(name, model, e, **params)

    masks: dict[float, dict[str, torch.Tensor]] = {}
    for e in eps_list:
        robust = clean_ok.clone()
        report.accuracy[e] = {}
        masks[e] = {}
        for name in names:
            start = time.perf_counter()
            todo = (robust if cascade else clean_ok).nonzero().squeeze(1)
            ok = torch.zeros_like(clean_ok)
            if todo.numel():
                ok[todo] = attack_correct(attack(name, e), x[todo], y[todo], batch_size)
            robust &= ok
            acc = (robust if cascade else ok).float().mean().item()
            report.accuracy[e][name] = acc
            masks[e][name] = ok
            report.seconds[name] = report.seconds.get(name, 0.0) + time.perf_counter() - start
            log(f"{name} {norm} eps={format_eps(e)}: {acc:.4f} ({time.perf_counter() - start:.1f}s)")
        report.worst[e] = robust.float().mean().item()

    if sanity and n:
        start = time.perf_counter()
        report.flags = sanity_flags(
            model, x, y, clean_ok, names, report, masks, attack, estimator, batch_size
        )
        report.seconds["sanity"] = time.perf_counter() - start
        for key, message in report.flags.items():
            log(f"WARNING flag.{key}: {message}")
            warnings.warn(f"{key}: {message}", checks.GradientMaskingWarning, stacklevel=2)
    return report


def sanity_flags(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    clean_ok: torch.Tensor,
    names: list[str],
    report: RobustnessReport,
    masks: dict[float, dict[str, torch.Tensor]],
    attack: Callable[..., Any],
    estimator: GradientEstimator,
    batch_size: int,
    subset: int = 200,
) -> dict[str, str]:
    """Run the gradient-masking checks of robustcompress.attacks.sanity; returns {check: message}."""
    n = len(x)
    flags: dict[str, str] = {}
    white = [a for a in names if ATTACKS.get(a).uses_gradients]
    black = [a for a in names if not ATTACKS.get(a).uses_gradients]
    first = white[0] if white else "pgd"
    few = slice(0, min(subset, n))
    xs, ys, oks = x[few], y[few], clean_ok[few]

    # eps 0: the whole attack machinery (random start, projection, clipping) must change nothing
    acc0 = attack_correct(attack(first, 0.0), xs, ys, batch_size).float().mean().item()
    if msg := checks.check_eps0(oks.float().mean().item(), acc0, len(xs)):
        flags["eps0"] = msg

    # accuracy must not rise with eps, per attack and for the worst case
    for name in [*names, "worst"]:
        curve = {
            e: (report.worst[e] if name == "worst" else report.accuracy[e][name]) for e in report.accuracy
        }
        if len(curve) > 1 and (msg := checks.check_eps_monotone(curve, n, name)):
            flags.setdefault("eps_monotone", msg)

    # an iterative white-box attack must beat one FGSM step
    iterative = [a for a in white if a != "fgsm"]
    for e in report.accuracy:
        if not iterative or e == 0:
            continue
        todo = clean_ok.nonzero().squeeze(1)
        fgsm_ok = torch.zeros_like(clean_ok)
        if todo.numel():
            fgsm_ok[todo] = attack_correct(attack("fgsm", e), x[todo], y[todo], batch_size)
        single = fgsm_ok.float().mean().item()
        for name in iterative:
            if msg := checks.check_steps(
                single, masks[e][name].float().mean().item(), n, f"{name} at eps {e:g}"
            ):
                flags.setdefault("steps", msg)

    # a huge eps must break everything
    # (a fixed PGD-10 probe with its default step size, so a quick user setting cannot trip it)
    big = large_eps(report.norm, x)
    probe = attack("pgd", big, steps=10, step_size=None)
    acc_big = attack_correct(probe, xs, ys, batch_size).float().mean().item()
    if msg := checks.check_large_eps(acc_big, big, len(xs)):
        flags["large_eps"] = msg

    # black-box attacks must not find what the white-box ones missed
    if white and black:
        for e in report.accuracy:
            survivors = clean_ok.clone()
            for a in white:
                survivors &= masks[e][a]
            for b in black:
                extra = (survivors & ~masks[e][b]).float().mean().item()
                if msg := checks.check_blackbox(extra, n, f"{b} at eps {e:g}"):
                    flags.setdefault("blackbox", msg)

    # all-zero input gradients: at the clean points and at random points of the largest ball
    frac = checks.zero_gradient_fraction(model, xs, ys, estimator, batch_size)
    e_max = max(report.accuracy)
    if e_max > 0:
        noisy = attack("pgd", e_max).random_point(xs)
        frac = max(frac, checks.zero_gradient_fraction(model, noisy, ys, estimator, batch_size))
    if msg := checks.check_zero_grad(frac):
        flags["zero_grad"] = msg
    return flags


def robust_accuracy(
    model: nn.Module,
    data: Any,
    attack: str = "pgd",
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    *,
    n_examples: int | None = None,
    batch_size: int = 256,
    **params: Any,
) -> float:
    """Accuracy of `model` under one attack at one eps on an ImageData (or an (x, y) pair).

    params go to the attack (steps, step_size, restarts, seed, estimator, ...).
    """
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    if n_examples is not None:
        x, y = x[:n_examples], y[:n_examples]
    device = model_device(model)
    x, y = x.to(device), y.to(device)
    with eval_mode(model):
        clean_ok = predict(model, x, batch_size) == y
    todo = clean_ok.nonzero().squeeze(1)
    if len(x) == 0:
        return float("nan")
    if todo.numel() == 0:
        return 0.0
    atk = make_attack(attack, model, eps, norm=norm, **params)
    return attack_correct(atk, x[todo], y[todo], batch_size).float().sum().item() / len(x)


def accuracy_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    attacks: Sequence[str] | str = "pgd",
    norm: Literal["linf", "l2"] = "linf",
    **kwargs: Any,
) -> dict[str, list[tuple[float, float]]]:
    """Accuracy versus eps: {attack or 'worst': [(eps, accuracy), ...]} (kwargs as evaluate_robustness)."""
    eps = sorted({0.0, *map(float, eps)})
    report = evaluate_robustness(model, x, y, attacks, eps, norm, **kwargs)
    curves = {a: [(e, report.accuracy[e][a]) for e in eps] for a in report.accuracy[eps[0]]}
    curves["worst"] = [(e, report.worst[e]) for e in eps]
    return curves


def plot_accuracy_curves(
    curves: dict[str, list[tuple[float, float]]], path: str | Path, title: str = "", norm: str = "linf"
) -> Path:
    """Write an accuracy-versus-eps plot (PNG/SVG/PDF by suffix) of one or more curves; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(
            xs, [100 * v for v in ys], marker="o", label=label, linestyle="--" if label == "worst" else "-"
        )
    ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'}, pixel scale [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


class AdversarialEvalConfig(EvalConfig):
    """The `adversarial` evaluation (run configs, `robustcompress evaluate --attacks ...`)."""

    attacks: list[str] = Field(default_factory=lambda: ["standard"])
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [8 / 255], min_length=1)
    steps: int | None = Field(None, ge=1)
    step_size: float | None = Field(None, gt=0)
    restarts: int = Field(1, ge=1)
    n_examples: int | None = Field(None, ge=1)
    batch_size: int = Field(256, ge=1)
    estimator: Literal["none", "ste", "bpda", "eot"] = "none"
    bpda_module: str | None = None
    eot_samples: int = Field(8, ge=1)
    transfer_from: str | None = None  # "parent" or a checkpoint folder
    cascade: bool = True
    sanity: bool = True
    attack_params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("attacks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in SUITES and name not in ATTACKS:
                known = ", ".join([*SUITES, *ATTACKS])
                raise ValueError(f"unknown attack {name!r}; choose from {known}")
        return value

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: list[float]) -> list[float]:
        if any(e < 0 or not math.isfinite(e) for e in value):
            raise ValueError("every eps must be finite and >= 0")
        return value


def surrogate_for(cfg: AdversarialEvalConfig, ctx: EvalContext) -> nn.Module | None:
    if cfg.transfer_from is None:
        return ctx.parent if "transfer" in cfg.attacks else None
    if cfg.transfer_from == "parent":
        if ctx.parent is None:
            raise ConfigError("transfer_from='parent' but this experiment has no parent (uncompressed) model")
        return ctx.parent.to(ctx.device)
    from robustcompress.checkpoint import load_checkpoint

    model, _ = load_checkpoint(cfg.transfer_from)
    return model.to(ctx.device)


@register_evaluation("adversarial", AdversarialEvalConfig)
def evaluate_adversarial(model: nn.Module, cfg: AdversarialEvalConfig, ctx: EvalContext) -> Metrics:
    model.to(ctx.device)
    test = ctx.data.test
    x, y = test.x, test.y
    if cfg.n_examples is not None:
        x, y = x[: cfg.n_examples], y[: cfg.n_examples]
    surrogate = surrogate_for(cfg, ctx)
    attacks = list(cfg.attacks)
    differentiable = has_input_gradient(model, x[:1].to(ctx.device))
    if not differentiable:
        # a real integer model (no autograd): transfer from the float parent plus score-based Square
        attacks = ["square"] if cfg.norm == "linf" else []
        surrogate = surrogate if surrogate is not None else ctx.parent
        if surrogate is None and not attacks:
            raise ConfigError(
                "this model has no input gradients (e.g. a real int8 model) and no float parent to transfer "
                "from; evaluate it in a run (the baseline is its parent) or give transfer_from = CHECKPOINT"
            )
        ctx.log("model has no input gradients: attacking by transfer from the float parent and Square")
    if surrogate is not None and "transfer" not in attacks:
        attacks.append("transfer")
    estimator = make_estimator(cfg.estimator, module=cfg.bpda_module, samples=cfg.eot_samples)
    report = evaluate_robustness(
        model,
        x,
        y,
        attacks,
        cfg.eps,
        cfg.norm,
        steps=cfg.steps,
        step_size=cfg.step_size,
        restarts=cfg.restarts,
        batch_size=cfg.batch_size,
        estimator=estimator,
        surrogate=surrogate,
        cascade=cfg.cascade,
        sanity=cfg.sanity and differentiable,  # the checks probe gradients
        seed=ctx.seed,
        attack_params=cfg.attack_params,
        log=ctx.log,
    )
    metrics = report.metrics()
    if not differentiable:
        metrics["flag.nondifferentiable"] = (
            "no input gradients: only transfer and score-based attacks ran; the float twin under a "
            "straight-through estimator gives the stronger white-box number"
        )
    return metrics


def has_input_gradient(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model's output depends differentiably on its input (False for ONNX Runtime models)."""
    was_training = model.training
    model.eval()
    probe = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(probe)
    model.train(was_training)
    return bool(out.requires_grad)
