"""The one-call Python API: compress, evaluate, fine-tune and export a model in a notebook line each.

Each call mirrors a command (`compress`, `evaluate`, `finetune`, `export`) and goes through the same
pipeline (`experiments.pipeline.apply_stages` / `run_evaluations`), so a stage or an evaluation
behaves alike from Python, the CLI and run configs. A model is any `nn.Module` that takes images in
[0, 1] (wrap a network trained on normalised inputs with `import_model(..., normalize=...)`);
`data` is a `DataSplits` (from `load_dataset`) or a dataset name read from `root`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustcompress import API
from robustcompress.capabilities import runs_in_torch, stored_tensors
from robustcompress.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401  (re-exported)
from robustcompress.data import DataSplits, load_dataset
from robustcompress.device import resolve_device
from robustcompress.errors import ConfigError
from robustcompress.evaluation.registry import EVALUATIONS, EvalContext
from robustcompress.experiments.pipeline import apply_stages, parse_evaluations, parse_stages, run_evaluations
from robustcompress.measure import count_macs, count_params
from robustcompress.models.importing import import_model  # noqa: F401  (re-exported)
from robustcompress.stages import StageContext
from robustcompress.training import TrainConfig

# The names `robustcompress` itself offers (read from here on first use), and the helpers below.
__all__ = [*API, "apply_measured", "change_metrics", "check_eps", "model_counts"]

Data = DataSplits | str
Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def _splits(data: Data, root: str | Path | None, seed: int) -> DataSplits:
    if isinstance(data, DataSplits):
        return data
    if isinstance(data, str):
        return load_dataset(data, root=root, seed=seed)
    raise ConfigError(
        "data must be a DataSplits (robustcompress.load_dataset(...)) or a dataset name, "
        f"got {type(data).__name__}"
    )


def _model(model: nn.Module) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model must be a torch nn.Module taking images in [0, 1], got {type(model).__name__}; "
            "load a checkpoint with robustcompress.load_checkpoint(path)[0]"
        )
    return model


def check_eps(norm: str, eps: Sequence[float]) -> None:
    """Refuse budgets that cannot be meant on [0, 1] pixels: L-inf eps in (0, 1], other norms eps > 0."""
    for e in eps:
        if e <= 0:
            raise ConfigError(f"eps {e:g} is not a perturbation budget: give eps > 0, e.g. 8/255")
        if norm == "linf" and e > 1:
            raise ConfigError(
                f"L-inf eps {e:g} exceeds the whole [0, 1] pixel range: images are read in [0, 1], so give "
                f"a fraction, e.g. {e:g}/255 = {e / 255:.4g} if {e:g} was meant on the 0-255 scale"
            )


# ---------------------------------------------------------------------------------------------
# compress


def model_counts(
    model: nn.Module, example: torch.Tensor, float_model: nn.Module | None = None
) -> dict[str, Any]:
    """Parameters, non-zero weights, MACs of one image and checkpoint bytes of `model`.

    A compiled model (ONNX Runtime int8) has no parameters: its stored tensors are counted, and its
    MACs are those of `float_model`, the float graph it was converted from (None if not given).
    """
    from robustcompress.evaluation.size import checkpoint_bytes

    if runs_in_torch(model):
        params, nonzero = count_params(model)
        macs, macs_nonzero = count_macs(model, example.to(_device_of(model)))
    else:
        tensors = stored_tensors(model) or []
        params = sum(t.numel() for t in tensors)
        nonzero = sum(int(torch.count_nonzero(t)) for t in tensors)
        macs, macs_nonzero = count_macs(float_model, example) if float_model is not None else (None, None)
    return {
        "params": params,
        "params.nonzero": nonzero,
        "macs": macs,
        "macs.nonzero": macs_nonzero,
        "size.bytes": len(checkpoint_bytes(model)),
    }


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def change_metrics(before: nn.Module, steps: Sequence[nn.Module], example: torch.Tensor) -> dict[str, Any]:
    """What a compression changed: `model_counts` of the input (`<name>.before`) and of the output.

    `steps` are the models after each stage, the last the output; the last float one gives an int8
    model's MACs.
    """
    example = example[:1].detach().cpu()
    out = steps[-1] if steps else before
    float_model = next((m for m in reversed([before, *steps]) if runs_in_torch(m)), None)
    first = model_counts(copy.deepcopy(before).cpu(), example)
    last = model_counts(copy.deepcopy(out).cpu(), example, copy.deepcopy(float_model).cpu())
    metrics = {f"{k}.before": v for k, v in first.items()}
    metrics.update(last)
    metrics["size.reduction"] = first["size.bytes"] / last["size.bytes"]
    return metrics


def apply_measured(
    model: nn.Module, stages: Sequence[Any], ctx: StageContext
) -> tuple[list[Any], float, float]:
    """Apply `stages` to `model` with its clean test accuracy before and after: (steps, before, after)."""
    clean = parse_evaluations([{"type": "clean"}])
    ectx = EvalContext(data=ctx.data, device=ctx.device, seed=ctx.seed, log=ctx.log)
    before = run_evaluations(model, clean, ectx, label="input")["acc.clean"]
    steps = apply_stages(model, stages, ctx)
    after = run_evaluations(steps[-1].model if steps else model, clean, ectx, label="output")["acc.clean"]
    return steps, before, after


def recipe_stages(
    recipe: str | Sequence[dict[str, Any]],
    epochs: int | None = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """A preset name or a stage list -> stage entries; `epochs`/`amount`/`clusters`/`bits` set a preset's."""
    from robustcompress.compression.presets import PRESETS

    given = {k: v for k, v in {"epochs": epochs, **overrides}.items() if v is not None}
    if isinstance(recipe, str):
        if recipe not in PRESETS:
            raise ConfigError(f"unknown preset {recipe!r}; choose one of: {', '.join(sorted(PRESETS))}")
        return [{"type": "preset", "name": recipe, **given}]
    entries = [dict(e) for e in recipe]
    presets = [e for e in entries if e.get("type") == "preset"]
    if given and not presets:
        raise ConfigError(
            f"{', '.join(given)} set(s) a preset's budget; in a list of stages set each stage's own "
            "fields (e.g. {'type': 'finetune', 'epochs': 1})"
        )
    for entry in presets:
        entry.update({k: v for k, v in given.items() if k not in entry})
    return entries


def compress(
    model: nn.Module,
    data: Data,
    recipe: str | Sequence[dict[str, Any]] = "pcqat-int8",
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    *,
    amount: float | None = None,
    clusters: int | None = None,
    bits: int | None = None,
    train: dict[str, Any] | TrainConfig | None = None,
    root: str | Path | None = None,
    log: Log = _quiet,
) -> tuple[nn.Module, dict[str, Any]]:
    """Compress a copy of `model` with a preset (e.g. "pcqat-int8") or a list of stage dicts.

    `epochs` sets every training budget of the preset (paper 000's default is up to 30 per step);
    `amount`, `clusters`, `bits` its pruning fraction, cluster count and bit width. `train` is the
    training config fine-tuning starts from (e.g. {"batch_size": 64}). Returns the compressed model
    and its metrics: acc.clean.before, acc.clean, and params, params.nonzero, macs, macs.nonzero,
    size.bytes (checkpoint bytes), each also as <name>.before, and size.reduction.
    """
    model = _model(model)
    splits = _splits(data, root, seed)
    stages = parse_stages(
        recipe_stages(recipe, epochs, amount=amount, clusters=clusters, bits=bits), "recipe"
    )
    train_cfg = train if isinstance(train, TrainConfig) else TrainConfig.parse(train or {}, where="train")
    ctx = StageContext(
        data=splits, device=resolve_device(device), seed=seed, train=train_cfg, parent=model, log=log,
        progress=False,
    )  # fmt: skip
    applied, before, after = apply_measured(model, stages, ctx)
    steps = [s.model for s in applied]
    out = steps[-1] if steps else copy.deepcopy(model)
    metrics = {"acc.clean.before": before, "acc.clean": after, **change_metrics(model, steps, splits.test.x)}
    return out, metrics


# ---------------------------------------------------------------------------------------------
# evaluate


def _names(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return list(value)


def evaluation_entries(
    attacks: str | Sequence[str] | None = None,
    eps: float | Sequence[float] | None = None,
    *,
    norm: str = "linf",
    corruptions: str | dict[str, Any] | None = None,
    certify: dict[str, Any] | None = None,
    efficiency: bool | dict[str, Any] = False,
    size: bool | dict[str, Any] = False,
    attack_params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The pipeline's evaluation entries for `evaluate`'s arguments (clean accuracy always first)."""
    entries: list[dict[str, Any]] = [{"type": "clean"}]
    if attacks:
        if eps is None:
            raise ConfigError(
                "attacks need eps, the budget in [0, 1] pixels (e.g. eps=8/255 or [2/255, 8/255])"
            )
        budgets = [float(eps)] if isinstance(eps, int | float) else [float(e) for e in eps]
        check_eps(norm, budgets)
        entries.append(
            {
                "type": "adversarial",
                "attacks": _names(attacks),
                "norm": norm,
                "eps": budgets,
                **(attack_params or {}),
            }
        )
    if corruptions:
        corr = {"suite": corruptions} if isinstance(corruptions, str) else dict(corruptions)
        entries.append({"type": "corruption", **corr})
    if certify is not None:
        if "certified" not in EVALUATIONS.names():
            raise ConfigError(
                "certify needs the 'certified' evaluation, which this installation does not register; "
                f"registered evaluations: {', '.join(EVALUATIONS.names())}"
            )
        entries.append({"type": "certified", **dict(certify)})
    for name, value in (("efficiency", efficiency), ("size", size)):
        if value:
            entries.append({"type": name, **(value if isinstance(value, dict) else {})})
    return entries


def evaluate(
    model: nn.Module,
    data: Data,
    attacks: str | Sequence[str] | None = None,
    eps: float | Sequence[float] | None = None,
    *,
    parent: nn.Module | None = None,
    device: str = "auto",
    seed: int = 0,
    root: str | Path | None = None,
    log: Log = _quiet,
    **measure: Any,
) -> dict[str, Any]:
    """Measure `model` on the test split: clean accuracy, and what else is asked; one dict of metrics.

    `attacks`: "standard", "pgd", "pgd,square" or a list, at budget(s) `eps` in `norm` ("linf",
    "l2"); `measure` holds the other keywords of `evaluation_entries`: `norm`; `attack_params`: more
    fields of the adversarial evaluation (steps, n_examples ...); `corruptions`: a suite ("cifar-c",
    "mnist-c") or a corruption evaluation dict; `certify`: the `certified` evaluation's fields;
    `efficiency`, `size`: True or their evaluation's fields.
    `parent`: the uncompressed model (mCE baseline, transfer-attack surrogate, size reference).
    """
    model = _model(model)
    entries = evaluation_entries(attacks, eps, **measure)
    if measure.get("size") and _spec(model) is None:
        raise ConfigError(
            "size writes the model's rcz file, which needs a model that rebuilds: wrap it with "
            "robustcompress.import_model(model, data) (its class importable by path)"
        )
    typed = parse_evaluations(entries)
    splits = _splits(data, root, seed)
    ctx = EvalContext(data=splits, device=resolve_device(device), seed=seed, parent=parent, log=log)
    return run_evaluations(model, typed, ctx)


def _spec(model: nn.Module) -> dict[str, Any] | None:
    from robustcompress.models.zoo import SPEC_ATTR

    return getattr(model, SPEC_ATTR, None)


# ---------------------------------------------------------------------------------------------
# finetune


def finetune(
    model: nn.Module,
    data: Data,
    objective: str = "pgd",
    epochs: int = 1,
    *,
    objective_params: dict[str, Any] | None = None,
    train: dict[str, Any] | TrainConfig | None = None,
    device: str = "auto",
    seed: int = 0,
    root: str | Path | None = None,
    log: Log = _quiet,
    **params: Any,
) -> nn.Module:
    """A fine-tuned copy of `model` (masks, clusters and fake quantizers stay), e.g. PGD training.

    `params` that are fields of the `finetune` stage (lr, optimizer, schedule, batch_size, momentum,
    weight_decay, patience, max_steps_per_epoch, sam_rho) go to it; the others (eps, steps, beta
    ...) are the objective's parameters.
    """
    from robustcompress.stages import STAGES

    model = _model(model)
    fields = set(STAGES.get("finetune").config_cls.model_fields)
    stage = {"type": "finetune", "epochs": epochs, "objective": objective}
    stage.update({k: v for k, v in params.items() if k in fields})
    stage["objective_params"] = {
        **(objective_params or {}),
        **{k: v for k, v in params.items() if k not in fields},
    }
    stages = parse_stages([stage], "finetune")
    train_cfg = train if isinstance(train, TrainConfig) else TrainConfig.parse(train or {}, where="train")
    ctx = StageContext(
        data=_splits(data, root, seed), device=resolve_device(device), seed=seed, train=train_cfg, log=log,
        progress=False,
    )  # fmt: skip
    return apply_stages(model, stages, ctx)[-1].model


# ---------------------------------------------------------------------------------------------
# export

FORMATS = ("onnx", "int8", "rcz")


def export(
    model: nn.Module,
    path: str | Path,
    format: str = "onnx",  # noqa: A002  (reads as the CLI's --format)
    calibration: Data | torch.Tensor | None = None,
    *,
    calibration_images: int = 512,
    latency_runs: int = 5,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Write `model` as a checked ONNX file, an int8 ONNX Runtime checkpoint folder or an rcz file.

    onnx and int8 are run in ONNX Runtime on `calibration` (a DataSplits, a dataset name or an
    N x C x H x W tensor in [0, 1]; training images are used) and kept only if they predict like
    the model. Returns the report: bytes, parity, latency (see docs/format.md, "Export").
    """
    from robustcompress.compression.format import export_int8_checked, export_onnx_checked, save_compressed

    model = _model(model)
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if format in ("int8", "rcz") and _spec(model) is None:
        raise ConfigError(
            f"format {format!r} writes a file that rebuilds the model, but this model carries no spec: "
            "make it with robustcompress.import_model(YourNetClass, dataset) (a class importable by path), "
            "or export format='onnx'"
        )
    if format == "rcz":
        size = save_compressed(model, path)
        return {"format": "rcz", "path": str(path), "bytes": size}
    if calibration is None:
        raise ConfigError(f"format {format!r} needs calibration images: calibration=data (or a tensor)")
    if isinstance(calibration, torch.Tensor):
        x = calibration[:calibration_images]
    else:
        x = _splits(calibration, root, 0).train.x[:calibration_images]
    model = model.cpu()
    if format == "onnx":
        report = export_onnx_checked(model, x, path, latency_runs=latency_runs)
    else:
        report = export_int8_checked(model, x, path, {}, latency_runs=latency_runs)
    return report.as_dict()
