"""Core commands: train, evaluate, run, results, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustcompress.cli.common import (
    FRACTION,
    adversarial_evaluation,
    attack_budget_options,
    checkpoint_data,
    common_options,
    data_options,
    print_json,
    split_list,
    user_errors,
)
from robustcompress.errors import ConfigError


def _log(msg: str) -> None:
    click.echo(msg, err=True)


@click.command()
@click.option(
    "--model",
    "model_name",
    default="cnn8",
    show_default=True,
    help="Zoo model (cnn8, resnet18/34/50, vgg11/16/19, mobilenetv2) or package.module:factory.",
)
@click.option(
    "--width", type=float, default=1.0, show_default=True, help="Width multiplier (compact models)."
)
@data_options
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate (default: 0.05 for SGD, 1e-3 for Adam).")
@click.option(
    "--schedule", type=click.Choice(["constant", "step", "cosine"]), default="cosine", show_default=True
)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option(
    "--augment",
    default="",
    metavar="KINDS",
    help="Batch augmentation: crop, flip or crop,flip (random 4 px crops, mirror images).",
)
@click.option(
    "--patience", type=click.IntRange(min=1), default=None, help="Early stopping on validation accuracy."
)
@click.option(
    "--objective", default="ce", show_default=True, help="Training objective (ce, pgd, fgsm_rs, trades, mmr)."
)
@click.option(
    "--objective-param",
    "objective_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Objective parameter, e.g. eps=8/255 (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoint folder (default: runs/train/<model>-<dataset>-s<seed>).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from the checkpoint in --out.")
@common_options
@user_errors
def train(
    model_name,
    width,
    dataset,
    data_root,
    download,
    limit_train,
    limit_test,
    epochs,
    batch_size,
    optimizer,
    lr,
    schedule,
    weight_decay,
    augment,
    patience,
    objective,
    objective_params,
    out,
    resume,
    seed,
    device,
    as_json,
):
    """Train a model from scratch and save a checkpoint (safetensors + JSON), every epoch."""
    from robustcompress.data import load_dataset
    from robustcompress.evaluation import accuracy
    from robustcompress.models import ModelSpec
    from robustcompress.plugins import load_plugins
    from robustcompress.training import TrainConfig, fit
    from robustcompress.training.loop import training_summary

    load_plugins()
    dataset = dataset or "fashion-mnist"
    splits = load_dataset(
        dataset, root=data_root, seed=seed, limit_train=limit_train, limit_test=limit_test, download=download
    )
    cfg = TrainConfig.parse(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "lr": lr if lr is not None else (0.05 if optimizer == "sgd" else 1e-3),
            "schedule": schedule,
            "weight_decay": weight_decay,
            "augment": [kind.strip() for kind in augment.split(",") if kind.strip()],
            "patience": patience,
            "objective": objective,
            "objective_params": parse_params(objective_params),
        },
        where="train",
    )
    spec = ModelSpec.for_data(model_name, splits.info, width=width)
    model = spec.build(seed=seed)
    out = Path(out or f"runs/train/{_slug(model_name)}-{_slug(dataset)}-s{seed}")
    data_meta = {"dataset": dataset, "limit_train": limit_train, "limit_test": limit_test}
    result = fit(
        model,
        splits,
        cfg,
        device=device,
        seed=seed,
        checkpoint_dir=out,
        resume=resume,
        meta={"data": data_meta},
    )
    metrics = {
        "acc.clean": accuracy(model, splits.test, cfg.eval_batch_size),
        "acc.val": result.best_val_acc,
        **{f"train.{k}": v for k, v in training_summary(result).items()},
    }
    from robustcompress.checkpoint import update_meta

    update_meta(out, metrics=metrics)
    _report(metrics, as_json, f"checkpoint: {out}")


@click.command()
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option(
    "--attacks",
    default=None,
    help="Comma-separated attacks or the suite 'standard' (APGD-CE, APGD-T, Square).",
)
@click.option(
    "--eps", "eps", type=FRACTION, multiple=True, help="Attack budget(s); fractions like 8/255 accepted."
)
@attack_budget_options
@click.option("--corruptions", default=None, help="Corruption suite: cifar-c or mnist-c.")
@click.option("--severities", default=None, help="Comma-separated severities (default 1..5).")
@click.option("--efficiency", is_flag=True, help="Parameters, sparsity, MACs and CPU latency.")
@click.option(
    "--runtimes",
    default=None,
    help="Comma-separated runtimes to time (implies --efficiency): eager, torchscript, onnxruntime.",
)
@click.option("--size", is_flag=True, help="Checkpoint and compressed-file sizes.")
@click.option(
    "--parent",
    type=click.Path(),
    default=None,
    help="Uncompressed parent checkpoint: baseline for mCE, surrogate for transfer attacks, size reference.",
)
@common_options
@user_errors
def evaluate(
    checkpoint,
    dataset,
    data_root,
    download,
    limit_train,
    limit_test,
    attacks,
    norm,
    eps,
    steps,
    step_size,
    restarts,
    n_examples,
    corruptions,
    severities,
    efficiency,
    runtimes,
    size,
    parent,
    seed,
    device,
    as_json,
):
    """Evaluate a checkpoint: clean accuracy, and optionally attacks, corruptions, efficiency, size."""
    evaluations: list[dict[str, Any]] = [{"type": "clean"}]
    if attacks:
        if not eps:
            raise ConfigError("--attacks needs at least one --eps (e.g. --eps 8/255)")
        evaluations.append(
            adversarial_evaluation(
                attacks, norm, eps, restarts, steps=steps, step_size=step_size, n_examples=n_examples
            )
        )
    if corruptions:
        corr: dict[str, Any] = {"type": "corruption", "suite": corruptions}
        if severities:
            corr["severities"] = [int(s) for s in split_list(severities)]
        evaluations.append(corr)
    if efficiency or runtimes:
        evaluations.append({"type": "efficiency", **({"runtimes": split_list(runtimes)} if runtimes else {})})
    if size:
        evaluations.append({"type": "size"})
    metrics = evaluate_checkpoint(
        checkpoint,
        evaluations,
        dataset=dataset,
        data_root=data_root,
        download=download,
        limit_test=limit_test,
        parent=parent,
        seed=seed,
        device=device,
    )
    _report(metrics, as_json)


def evaluate_checkpoint(
    checkpoint,
    evaluations,
    *,
    dataset=None,
    data_root=None,
    download=False,
    limit_test=None,
    parent=None,
    seed=0,
    device="auto",
) -> dict[str, Any]:
    """Load a checkpoint and its data, run the evaluations, return one dict of metrics."""
    from robustcompress.checkpoint import load_checkpoint
    from robustcompress.device import resolve_device
    from robustcompress.evaluation import EVALUATIONS, EvalContext
    from robustcompress.experiments.config import parse_typed
    from robustcompress.plugins import load_plugins

    load_plugins()
    typed = [parse_typed(e, EVALUATIONS, f"evaluations[{i}]") for i, e in enumerate(evaluations)]
    model, meta = load_checkpoint(checkpoint)
    _, splits = checkpoint_data(
        checkpoint, meta, dataset, root=data_root, seed=seed, limit_test=limit_test, download=download,
        limit_train=1, val_fraction=0.0,
    )  # fmt: skip
    parent_model = load_checkpoint(parent)[0] if parent else None
    dev = resolve_device(device)
    ctx = EvalContext(data=splits, device=dev, seed=seed, parent=parent_model, log=_log)
    metrics: dict[str, Any] = {}
    if parent_model is not None:
        ctx_parent = EvalContext(data=splits, device=dev, seed=seed, log=_log)
        ctx.baseline_metrics = {}
        for name, cfg in typed:
            if name == "corruption":
                ctx.baseline_metrics.update(EVALUATIONS.get(name).run(parent_model, cfg, ctx_parent))
    for name, cfg in typed:
        metrics.update(EVALUATIONS.get(name).run(model, cfg, ctx))
    return metrics


@click.command()
@click.argument("config", type=click.Path())
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder (overrides the config's)."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value by dotted key, e.g. --set train.epochs=1 (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of the metrics on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run(config, out, overrides, as_json, quiet):
    """Run the experiment(s) of a TOML config; finished work is cached and skipped on rerun."""
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.runner import run_experiments
    from robustcompress.experiments.store import RESULTS_DB, format_table
    from robustcompress.plugins import load_plugins
    from robustcompress.report import write_report

    load_plugins()
    values = parse_params(overrides)
    if out:
        values["output"] = out
    cfg = load_config(config, values)
    results = run_experiments(cfg, progress=not quiet)
    _log(f"report: {write_report(cfg.output, log=_log)}")
    if as_json:
        print_json({r.name: r.metrics for r in results})
    else:
        click.echo(format_table({(r.name, m): v for r in results for m, v in r.metrics.items()}))
        out_dir = Path(cfg.output)
        _log(f"results: {out_dir / RESULTS_DB}; per experiment: {out_dir}/<name>/metrics.json")


@click.command()
@click.argument("folder", type=click.Path(), default="runs")
@click.option("--experiment", default=None, help="Only this experiment.")
@click.option("--metrics", "columns", default=None, help="Comma-separated metric names to show.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def results(folder, experiment, columns, as_json):
    """Show the results store of an output folder as a table (or JSON)."""
    from robustcompress.experiments.store import ResultsStore, format_table

    rows = ResultsStore.open(folder).metrics(experiment)
    if as_json:
        print_json({f"{e}|{m}": v for (e, m), v in rows.items()})
    else:
        click.echo(format_table(rows, split_list(columns) if columns else None))


@click.command()
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding fashion-mnist/ (default: $ROBUSTCOMPRESS_DATA, else a per-user cache).",
)
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--quick", is_flag=True, help="A tiny run (a few hundred images) to check the set-up.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def demo(data_root, out, quick, device, as_json):
    """Train cnn8 on Fashion-MNIST, compress it, fine-tune it, measure it, print a table."""
    from robustcompress.demo import run_demo

    table, rows = run_demo(data_root=data_root, out=out, quick=quick, device=device, log=_log)
    if as_json:
        print_json(rows)
    else:
        click.echo(table)
    _log(f"outputs: {Path(out).resolve()} (results.sqlite, <experiment>/metrics.json, artifacts/)")


def parse_params(items) -> dict[str, Any]:
    """KEY=VALUE pairs -> dict; values parsed as TOML scalars (numbers, booleans, strings, lists)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            if "/" in value:
                from robustcompress.cli.common import parse_fraction

                out[key.strip()] = parse_fraction(value)
            else:
                out[key.strip()] = value
    return out


def _report(metrics: dict[str, Any], as_json: bool, where: str | None = None) -> None:
    if as_json:
        print_json(metrics)
    else:
        width = max(len(k) for k in metrics) if metrics else 0
        for k, v in metrics.items():
            click.echo(f"{k.ljust(width)}  {v:.4f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}")
    if where:
        click.echo(where, err=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


COMMANDS = [demo, train, evaluate, run, results]
