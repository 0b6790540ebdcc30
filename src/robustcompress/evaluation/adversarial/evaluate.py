"""The registered `adversarial` evaluation: its config, the metrics it declares, and the choice of
attacks for models without input gradients."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import nn

from robustcompress.attacks import ATTACKS, SUITES, make_estimator
from robustcompress.capabilities import differentiable_twin, has_input_gradients
from robustcompress.errors import ConfigError, UnsupportedModelError
from robustcompress.evaluation.adversarial.cascade import evaluate_robustness
from robustcompress.evaluation.adversarial.suites import expand_suite
from robustcompress.evaluation.registry import (
    EvalConfig,
    EvalContext,
    Metrics,
    MetricSpec,
    register_evaluation,
)


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


ADVERSARIAL_METRICS = [
    MetricSpec("acc.worst_*", "accuracy", "higher", "fraction", "examples surviving every attack"),
    MetricSpec("acc.*_linf_*", "accuracy", "higher", "fraction", "robust accuracy under an L-inf attack"),
    MetricSpec("acc.*_l2_*", "accuracy", "higher", "fraction", "robust accuracy under an L2 attack"),
    MetricSpec("adv.clean_acc", "accuracy", "higher", "fraction", "clean accuracy of the attacked examples"),
    MetricSpec("adv.n_examples", "count", "none", "", "examples attacked"),
    MetricSpec("adv.seconds", "time", "none", "s", "wall time of the attacks and checks"),
    MetricSpec("adv.white_box_via", "note", "none", "", "where the white-box attacks got their gradients"),
    MetricSpec("flag.*", "flag", "none", "", "a gradient-masking check that fired"),
]


@register_evaluation("adversarial", AdversarialEvalConfig, metrics=ADVERSARIAL_METRICS, needs="parent")
def evaluate_adversarial(model: nn.Module, cfg: AdversarialEvalConfig, ctx: EvalContext) -> Metrics:
    model.to(ctx.device)
    test = ctx.data.test
    x, y = test.x, test.y
    if cfg.n_examples is not None:
        x, y = x[: cfg.n_examples], y[: cfg.n_examples]
    surrogate = surrogate_for(cfg, ctx)
    attacks = list(cfg.attacks)
    differentiable = has_input_gradients(model)
    twin = None if differentiable else twin_of(model, ctx)
    if not differentiable:
        # an integer model: white-box attacks through its fake-quant twin (when it has one), plus
        # score-based Square and transfer from the float parent; the worst case is over all of them
        if twin is None:
            attacks = []
        if cfg.norm == "linf" and (not attacks or "square" not in expand_suite(attacks, cfg.norm)):
            attacks.append("square")
        surrogate = surrogate if surrogate is not None else ctx.parent
        if surrogate is None and not attacks:
            raise ConfigError(
                "this model has no input gradients (e.g. a real int8 model) and no float parent to transfer "
                "from; evaluate it in a run (the baseline is its parent) or give transfer_from = CHECKPOINT"
            )
        ctx.log(
            "model has no input gradients: "
            + ("white-box attacks through its fake-quant twin, " if twin is not None else "")
            + "Square and transfer from the float parent; worst case over all"
        )
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
        twin=twin,
        sanity=cfg.sanity and (differentiable or twin is not None),  # the checks probe gradients
        seed=ctx.seed,
        attack_params=cfg.attack_params,
        log=ctx.log,
    )
    metrics = report.metrics()
    if twin is not None:
        metrics["adv.white_box_via"] = "fake-quant twin (STE)"  # examples crafted there, judged here
    elif not differentiable:
        metrics["flag.nondifferentiable"] = (
            "no input gradients and no differentiable twin: only transfer and score-based attacks ran, "
            "so the robust accuracy is an upper bound that white-box attacks would likely lower"
        )
    return metrics


def twin_of(model: nn.Module, ctx: EvalContext) -> nn.Module | None:
    """The model's differentiable twin on ctx.device, or None (it has none, or it cannot be built)."""
    try:
        twin = differentiable_twin(model)
    except UnsupportedModelError as exc:
        ctx.log(f"no fake-quant twin ({exc}); white-box attacks cannot run")
        return None
    return None if twin is None else twin.to(ctx.device).eval()
