"""Running a suite of attacks over eps values: the cascade (each attack re-attacks only the
survivors of the earlier ones, as AutoAttack), the per-example worst case, and the sanity checks."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from robustcompress.attacks import ATTACKS, make_attack, make_estimator
from robustcompress.attacks import sanity as checks
from robustcompress.attacks.estimators import GradientEstimator
from robustcompress.device import model_device
from robustcompress.errors import ConfigError
from robustcompress.evaluation.adversarial.results import RobustnessReport, format_eps
from robustcompress.evaluation.adversarial.sanity import sanity_flags
from robustcompress.evaluation.adversarial.suites import attack_correct, build_attack_params, expand_suite
from robustcompress.measure import predict
from robustcompress.modes import eval_mode


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
    twin: nn.Module | None = None,
    cascade: bool = True,
    sanity: bool = True,
    seed: int = 0,
    attack_params: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> RobustnessReport:
    """Robust accuracy of `model` on (x, y) under each attack and each eps, plus the worst case.

    attacks: names from ATTACKS and/or suite names ("standard"); attack_params: extra keyword
    arguments per attack name (e.g. {"square": {"queries": 1000}}). Returns a RobustnessReport.

    twin: a differentiable stand-in for a model without input gradients (an int8 model's fake-quant
    twin): every white-box attack crafts its examples on the twin and they are judged on `model`;
    the gradient-masking checks probe the twin's gradients.
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
        if twin is not None and ATTACKS.get(name).uses_gradients:
            inner = {k: v for k, v in params.items() if k not in ("norm", "seed")}
            return make_attack(
                "transfer", model, e, norm=norm, seed=seed, surrogate=twin, attack=name, attack_params=inner
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
            model if twin is None else twin,
            x,
            y,
            clean_ok,
            names,
            report,
            masks,
            attack,
            estimator,
            batch_size,
        )
        report.seconds["sanity"] = time.perf_counter() - start
        for key, message in report.flags.items():
            log(f"WARNING flag.{key}: {message}")
            warnings.warn(f"{key}: {message}", checks.GradientMaskingWarning, stacklevel=2)
    return report


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
