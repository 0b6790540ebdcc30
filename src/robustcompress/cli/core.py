"""Core commands: train, evaluate, run, results, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustcompress.cli.common import (
    FRACTION,
    DataArgs,
    attack_budget_options,
    attack_names,
    checkpoint_test_split,
    common_options,
    data_options,
    evaluation_config,
    listing,
    literal_choices,
    log,
    objective_options,
    parse_params,
    print_json,
    split_list,
    user_errors,
)
from robustcompress.corruptions import SUITES
from robustcompress.errors import ConfigError
from robustcompress.models import MODELS
from robustcompress.training import TrainConfig

TRAIN_EXAMPLES = """
\b
Examples:
  robustcompress train --model cnn8 --dataset fashion-mnist --epochs 3 --json
  robustcompress train --model resnet18 --dataset cifar10 --augment crop,flip --epochs 30
  robustcompress train --objective pgd --objective-param eps=0.1 --out runs/cnn8-at
"""


@click.command(epilog=TRAIN_EXAMPLES)
@click.option(
    "--model",
    "model_name",
    default="cnn8",
    show_default=True,
    help=f"Zoo model ({listing(MODELS.names())}) or your own as package.module:factory.",
)
@click.option(
    "--width", type=float, default=1.0, show_default=True, help="Width multiplier (compact models)."
)
@data_options
@click.option("--epochs", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--optimizer",
    type=click.Choice(literal_choices(TrainConfig, "optimizer")),
    default="sgd",
    show_default=True,
)
@click.option("--lr", type=float, default=None, help="Learning rate (default: 0.05 for SGD, 1e-3 for Adam).")
@click.option(
    "--schedule",
    type=click.Choice(literal_choices(TrainConfig, "schedule")),
    default="cosine",
    show_default=True,
)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option(
    "--augment",
    default="",
    metavar="KINDS",
    help=f"Comma-separated batch augmentations ({listing(literal_choices(TrainConfig, 'augment'))}): "
    "random 4 px crops, mirror images.",
)
@click.option(
    "--patience", type=click.IntRange(min=1), default=None, help="Early stopping on validation accuracy."
)
@objective_options("Training objective.", "eps=8/255")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoint folder (default: runs/train/<model>-<dataset>-s<seed>).",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from the checkpoint in --out.")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint already in --out.")
@common_options
@user_errors
def train(
    model_name,
    width,
    data,
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
    overwrite,
    seed,
    device,
    as_json,
):
    """Train a model from scratch and save a checkpoint (safetensors + JSON), every epoch."""
    from robustcompress.evaluation import accuracy
    from robustcompress.models import ModelSpec
    from robustcompress.training import fit
    from robustcompress.training.loop import training_summary

    dataset = data.dataset or "fashion-mnist"
    out = Path(out or f"runs/train/{_slug(model_name)}-{_slug(dataset)}-s{seed}")
    if resume and overwrite:
        raise ConfigError(
            "give --resume (continue the training in --out) or --overwrite (start over), not both"
        )
    if not resume and not overwrite and out.is_dir() and any(out.iterdir()):
        raise ConfigError(
            f"{out} is not empty (a checkpoint from an earlier run?): give --resume to continue its "
            "training, --overwrite to replace it, or another --out"
        )
    splits = data.load(dataset, seed=seed)
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
    result = fit(
        model,
        splits,
        cfg,
        device=device,
        seed=seed,
        checkpoint_dir=out,
        resume=resume,
        meta={"data": data.meta(dataset)},
    )
    metrics = {
        "acc.clean": accuracy(model, splits.test, cfg.eval_batch_size),
        "acc.val": result.best_val_acc,
        **{f"train.{k}": v for k, v in training_summary(result).items()},
    }
    from robustcompress.checkpoint import update_meta
    from robustcompress.training.distributed import is_main_process

    if is_main_process():  # under torchrun, rank 0 alone writes and prints
        update_meta(out, metrics=metrics)
        _report(metrics, as_json, f"checkpoint: {out}")


EVALUATE_EXAMPLES = """
\b
Examples:
  robustcompress evaluate runs/train/cnn8-fashion-mnist-s0 --json
  robustcompress evaluate CKPT --attacks pgd,standard --eps 0.1 --n-examples 500
  robustcompress evaluate CKPT --corruptions cifar-c --efficiency --size --parent PARENT_CKPT
"""


@click.command(epilog=EVALUATE_EXAMPLES)
@click.argument("checkpoint", type=click.Path())
@data_options
@click.option(
    "--attacks",
    default=None,
    help=f"Comma-separated attacks or attack suites: {listing(attack_names())}.",
)
@click.option(
    "--eps",
    "eps",
    type=FRACTION,
    multiple=True,
    help="Attack budget(s) on [0, 1] pixels: L-inf in (0, 1], L2 > 0; fractions like 8/255 accepted.",
)
@attack_budget_options
@click.option("--corruptions", type=click.Choice(SUITES.names()), default=None, help="Corruption suite.")
@click.option("--severities", default=None, help="Comma-separated severities (default: all of the suite's).")
@click.option("--efficiency", is_flag=True, help="Parameters, sparsity, MACs and CPU latency.")
@click.option(
    "--runtimes",
    default=None,
    help="Comma-separated runtimes to time (implies --efficiency): "
    f"{listing(literal_choices(evaluation_config('efficiency'), 'runtimes'))}.",
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
    data,
    attacks,
    eps,
    budget,
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
        evaluations.append(budget.evaluation(attacks, eps))
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
        data=data,
        parent=parent,
        seed=seed,
        device=device,
    )
    _report(metrics, as_json)


def evaluate_checkpoint(
    checkpoint,
    evaluations,
    *,
    data: DataArgs | None = None,
    parent=None,
    seed=0,
    device="auto",
) -> dict[str, Any]:
    """Load a checkpoint (and its parent) and its test data, run the evaluations through the pipeline."""
    from robustcompress.checkpoint import load_checkpoint
    from robustcompress.device import resolve_device
    from robustcompress.evaluation import EvalContext
    from robustcompress.experiments.pipeline import parse_evaluations, run_evaluations

    typed = parse_evaluations(evaluations)
    model, meta = load_checkpoint(checkpoint)
    splits = checkpoint_test_split(checkpoint, meta, data or DataArgs(), seed=seed)
    parent_model = load_checkpoint(parent)[0] if parent else None
    ctx = EvalContext(data=splits, device=resolve_device(device), seed=seed, parent=parent_model, log=log)
    return run_evaluations(model, typed, ctx, label=str(checkpoint))


RUN_EXAMPLES = """
\b
Examples:
  robustcompress run src/robustcompress/configs/demo.toml --set train.epochs=1
  robustcompress run configs/paper003-fashion-mnist.toml --dry-run
  robustcompress run my-study.toml --out runs/my-study --json
"""


@click.command(epilog=RUN_EXAMPLES)
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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print every experiment's models and evaluations with their cache keys and what is already "
    "done; train and evaluate nothing.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where tasks run (overrides [execution] executor): local, one at a time in this process; ray, "
    "on a Ray cluster ([execution] address) or a local Ray instance (docs/scaling.md).",
)
@click.option(
    "--workers", type=int, default=None, help="Tasks at once with ray (overrides [execution] workers)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of the metrics on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run(config, out, overrides, dry_run, executor, workers, as_json, quiet):
    """Run the experiment(s) of a TOML config; finished work is cached and skipped on rerun."""
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.graph import build_graph
    from robustcompress.experiments.runner import StudyFailed, plan, require_study, run_experiments
    from robustcompress.experiments.store import RESULTS_DB, format_table
    from robustcompress.report import write_report

    values = parse_params(overrides)
    if out:
        values["output"] = out
    values.update(
        {f"execution.{k}": v for k, v in [("executor", executor), ("workers", workers)] if v is not None}
    )
    cfg = load_config(config, values)
    require_study(cfg, str(config))
    if dry_run:
        graph = build_graph(cfg)
        planned = plan(cfg, graph)
        if as_json:  # stdout is the plan alone; the graph's shape goes to stderr
            print_json({"experiments": [p.to_dict() for p in planned]})
            log(format_shape(graph.shape()))
        else:
            click.echo(format_plan(planned, graph.shape()))
        return
    failed = None
    try:
        results = run_experiments(cfg, progress=not quiet)
    except StudyFailed as exc:
        failed, results = exc, exc.results
    if results:
        log(f"report: {write_report(cfg.output, log=log)}")
    if failed is not None:
        raise failed
    if as_json:
        print_json({r.name: r.metrics for r in results})
    else:
        click.echo(format_table({(r.name, m): v for r in results for m, v in r.metrics.items()}))
        out_dir = Path(cfg.output)
        log(f"results: {out_dir / RESULTS_DB}; per experiment: {out_dir}/<name>/metrics.json")


def format_plan(planned, shape: dict[str, int] | None = None) -> str:
    """`run --dry-run`'s text: per experiment, each model's key and state, and its evaluations';
    then the task graph's size and parallel width."""
    lines = []
    for p in planned:
        lines.append(f"{p.name}  (output: {p.output})")
        for a in p.artifacts:
            fresh = f"given: {a.given}" if a.given else ("to train" if a.stage == "baseline" else "to make")
            state = "cached" if a.cached else fresh
            lines.append(f"  {a.label:<16} {a.stage:<10} {a.key}  {state}")
            for e in a.evaluations:
                lines.append(f"      {e.type:<14} {e.key}  {'stored' if e.stored else 'to run'}")
    if shape:
        lines.append(format_shape(shape))
    return "\n".join(lines)


def format_shape(shape: dict[str, int]) -> str:
    """The task graph in one line: its size, its longest chain and how many tasks can run at once."""
    return (
        f"graph: {shape['tasks']} tasks ({shape['artifacts']} artifacts, {shape['evaluations']} "
        f"evaluation tasks), longest chain {shape['depth']}, parallel width {shape['width']} "
        "(tasks that can run at once)"
    )


RESULTS_EXAMPLES = """
\b
Examples:
  robustcompress results runs/demo --metrics acc.clean,mce,size.ratio
  robustcompress results runs/demo --experiment demo/pcqat-int8 --json
  robustcompress results runs/demo --all-runs
"""


@click.command(epilog=RESULTS_EXAMPLES)
@click.argument("folder", type=click.Path(), default="runs")
@click.option("--experiment", default=None, help="Only this experiment.")
@click.option(
    "--metrics",
    "columns",
    default=None,
    help="Comma-separated metric names or patterns to show, e.g. acc.clean,mce or 'acc.*'.",
)
@click.option(
    "--all-runs",
    is_flag=True,
    help="Every run of each experiment (a rerun with another config is a new run), not only the latest.",
)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def results(folder, experiment, columns, all_runs, as_json):
    """Show the results store of an output folder as a table (or JSON): each experiment's latest run."""
    from robustcompress.experiments.store import ResultsStore, format_table, select_metrics

    models = ResultsStore.open(folder).models(experiment, all_runs=all_runs)
    if all_runs:  # rows and JSON names say which run
        keys = ("experiment", "run", "model")
        rows = {(m.run.experiment, m.run.label, m.model): m.metrics for m in models}
        names = [f"{m.run.experiment}|{m.model}|run{m.run.id}" for m in models]
    else:
        keys = ("experiment", "model")
        rows = {(m.run.experiment, m.model): m.metrics for m in models}
        names = [f"{m.run.experiment}|{m.model}" for m in models]
    chosen = select_metrics(rows, split_list(columns)) if columns else None
    if as_json:
        print_json(
            {
                n: {c: m.metrics[c] for c in chosen or m.metrics if c in m.metrics}
                for n, m in zip(names, models)
            }
        )
    else:
        click.echo(format_table(rows, chosen, keys))


DEMO_EXAMPLES = """
\b
Examples:
  robustcompress demo --quick --data-root ../shared/data
  robustcompress demo --out runs/demo --json
"""


@click.command(epilog=DEMO_EXAMPLES)
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

    table, rows = run_demo(data_root=data_root, out=out, quick=quick, device=device, log=log)
    if as_json:
        print_json(rows)
    else:
        click.echo(table)
    log(f"outputs: {Path(out).resolve()} (results.sqlite, <experiment>/metrics.json, artifacts/)")


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
