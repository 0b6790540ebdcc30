"""Which attacks run and with what settings: suite expansion, shared parameters, per-example outcome."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustcompress.attacks import ATTACKS, SUITES, attack_parameters
from robustcompress.attacks.estimators import GradientEstimator
from robustcompress.errors import ConfigError


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
