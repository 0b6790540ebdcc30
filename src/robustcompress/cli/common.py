"""Options and error handling shared by every command."""

from __future__ import annotations

import functools
import json
import sys
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import click

from robustcompress.attacks import ATTACKS
from robustcompress.attacks import SUITES as ATTACK_SUITES
from robustcompress.data import DATASETS
from robustcompress.errors import ConfigError, RobustCompressError
from robustcompress.evaluation import EVALUATIONS
from robustcompress.training import OBJECTIVES, TrainConfig
from robustcompress.training.distributed import is_main_process


def user_errors(fn: Callable) -> Callable:
    """Turn a RobustCompressError into a one-paragraph message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RobustCompressError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; finished work is kept (rerun to resume)", err=True)
            sys.exit(130)

    return wrapper


def parse_params(items) -> dict[str, Any]:
    """KEY=VALUE pairs -> dict; values parsed as TOML scalars (numbers, booleans, strings, lists)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = _fraction_or_text(value)
    return out


def _fraction_or_text(value: str) -> float | str:
    """'8/255' is a number; 'runs/base' (a path) stays text."""
    try:
        return float(Fraction(value.strip()))
    except (ValueError, ZeroDivisionError):
        return value


def parse_fraction(text: str) -> float:
    """'8/255' or '0.1' -> float; used for every epsilon on the command line."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{text!r} is not a number or a fraction like 8/255") from None


class FractionType(click.ParamType):
    name = "NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, float | int):
            return float(value)
        try:
            return float(Fraction(str(value).strip()))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number or a fraction like 8/255", param, ctx)


FRACTION = FractionType()


def split_list(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated lists of the command line."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def listing(names: Iterable[str]) -> str:
    """'a, b, c': how help texts and errors name the valid choices."""
    return ", ".join(names)


def literal_choices(config_cls: type, field: str) -> list[str]:
    """The values a config field allows (its `Literal[...]`, also inside list[...] or `| None`).

    Choices of the command line are read from the config the option fills, never restated.
    """

    def values(annotation: Any) -> list[str]:
        if typing.get_origin(annotation) is typing.Literal:
            return [str(v) for v in typing.get_args(annotation)]
        return [v for arg in typing.get_args(annotation) for v in values(arg)]

    found = values(config_cls.model_fields[field].annotation)
    if not found:
        raise TypeError(f"{config_cls.__name__}.{field} is not typed with a Literal")
    return list(dict.fromkeys(found))


def evaluation_config(name: str) -> type:
    """The config class of a registered evaluation (where its options' choices are declared)."""
    return EVALUATIONS.get(name).config_cls


def attack_names() -> list[str]:
    """What `--attack(s)` accepts: every registered attack and every attack suite."""
    return [*ATTACKS.names(), *ATTACK_SUITES]


def dataset_help() -> str:
    return (
        f"Dataset: {listing(DATASETS.names())}; readers of your own files take a path after a colon, "
        "e.g. npz:data/x.npz or folder:data/images."
    )


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=None, sort_keys=True, default=str))


def log(msg: str) -> None:
    """Progress and notes go to stderr, so stdout carries only the result (e.g. --json).

    Under torchrun only rank 0 writes them: every rank runs the same command, so the others would
    repeat each line. Errors (`user_errors`) still come from every rank.
    """
    if is_main_process():
        click.echo(msg, err=True)


def _stack(fn: Callable, options: list[Callable]) -> Callable:
    """Apply click options so that they appear in `--help` in the order listed."""
    for option in reversed(options):
        fn = option(fn)
    return fn


TEST_ONLY = {"limit_train": 1, "val_fraction": 0.0}  # load_dataset arguments that skip the training data


@dataclass(frozen=True)
class DataArgs:
    """What --dataset, --data-root, --download, --limit-train and --limit-test asked for.

    Commands get these as one argument, `data`, and load through it, so the options are passed
    on in one place only.
    """

    dataset: str | None = None
    root: str | None = None
    download: bool = False
    limit_train: int | None = None
    limit_test: int | None = None

    def load(self, dataset: str | None = None, *, seed: int = 0, **overrides: Any):
        """`load_dataset` of `dataset` (default: --dataset) with these options; `overrides` win."""
        from robustcompress.data import load_dataset

        kwargs = {
            "root": self.root,
            "seed": seed,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
            "download": self.download,
        }
        return load_dataset(dataset or self.dataset, **{**kwargs, **overrides})

    def load_test(self, dataset: str | None = None, *, seed: int = 0):
        """For commands that use only the test split: no training data is read."""
        return self.load(dataset, seed=seed, **TEST_ONLY)

    def meta(self, dataset: str, **overrides: Any) -> dict[str, Any]:
        """The `data` entry a checkpoint records of where it was trained or measured."""
        limits = {"limit_train": self.limit_train, "limit_test": self.limit_test}
        return {"dataset": dataset, **limits, **overrides}


def data_options(fn: Callable) -> Callable:
    """--dataset, --data-root, --download, --limit-train, --limit-test, handed on as `data: DataArgs`."""

    @functools.wraps(fn)
    def collect(*args: Any, **kwargs: Any):
        data = DataArgs(
            dataset=kwargs.pop("dataset"),
            root=kwargs.pop("data_root"),
            download=kwargs.pop("download"),
            limit_train=kwargs.pop("limit_train"),
            limit_test=kwargs.pop("limit_test"),
        )
        return fn(*args, data=data, **kwargs)

    options = [
        click.option("--dataset", default=None, help=dataset_help()),
        click.option(
            "--data-root",
            type=click.Path(file_okay=False),
            default=None,
            help="Folder holding <dataset>/ files (default: $ROBUSTCOMPRESS_DATA, else a per-user cache).",
        ),
        click.option("--download", is_flag=True, help="Fetch missing official files (checksums verified)."),
        click.option(
            "--limit-train", type=click.IntRange(min=1), default=None, help="Use the first N training images."
        ),
        click.option(
            "--limit-test", type=click.IntRange(min=1), default=None, help="Use the first N test images."
        ),
    ]
    return _stack(collect, options)


@dataclass(frozen=True)
class AttackBudget:
    """The attack budget `attack` and `evaluate` share, as one argument."""

    norm: str = "linf"
    steps: int | None = None
    step_size: float | None = None
    restarts: int = 1
    n_examples: int | None = None

    def evaluation(self, attacks: str, eps, **optional: Any) -> dict[str, Any]:
        """The `adversarial` evaluation entry; options left unset (None) keep the evaluation's defaults."""
        from robustcompress.api import check_eps

        check_eps(self.norm, eps)
        entry: dict[str, Any] = {
            "type": "adversarial",
            "attacks": split_list(attacks),
            "norm": self.norm,
            "eps": list(eps),
            "restarts": self.restarts,
        }
        more = {"steps": self.steps, "step_size": self.step_size, "n_examples": self.n_examples, **optional}
        entry.update({k: v for k, v in more.items() if v is not None})
        return entry


def attack_budget_options(fn: Callable) -> Callable:
    """--norm, --steps, --step-size, --restarts, --n-examples, handed on as `budget: AttackBudget`."""

    @functools.wraps(fn)
    def collect(*args: Any, **kwargs: Any):
        fields = ("norm", "steps", "step_size", "restarts", "n_examples")
        return fn(*args, budget=AttackBudget(**{f: kwargs.pop(f) for f in fields}), **kwargs)

    options = [
        click.option(
            "--norm",
            type=click.Choice(literal_choices(evaluation_config("adversarial"), "norm")),
            default="linf",
            show_default=True,
        ),
        click.option(
            "--steps", type=click.IntRange(min=1), default=None, help="Iterations (PGD default 20, APGD 100)."
        ),
        click.option(
            "--step-size", type=FRACTION, default=None, help="PGD step (default 2.5 * eps / steps)."
        ),
        click.option("--restarts", type=click.IntRange(min=1), default=1, show_default=True),
        click.option(
            "--n-examples",
            type=click.IntRange(min=1),
            default=None,
            help="Attack only the first N test images.",
        ),
    ]
    return _stack(collect, options)


def objective_options(help: str, example: str) -> Callable[[Callable], Callable]:  # noqa: A002
    """--objective and --objective-param (repeatable KEY=VALUE), with each command's own help."""

    def decorate(fn: Callable) -> Callable:
        options = [
            click.option(
                "--objective",
                type=click.Choice(OBJECTIVES.names()),
                default="ce",
                show_default=True,
                help=help,
            ),
            click.option(
                "--objective-param",
                "objective_params",
                multiple=True,
                metavar="KEY=VALUE",
                help=f"Objective parameter, e.g. {example} (repeatable).",
            ),
        ]
        return _stack(fn, options)

    return decorate


def common_options(fn: Callable) -> Callable:
    """--seed, --device, --json."""
    options = [
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option(
            "--json", "as_json", is_flag=True, help="Print one JSON object of the metrics on stdout."
        ),
    ]
    return _stack(fn, options)


def checkpoint_data(checkpoint, meta: dict[str, Any], data: DataArgs, *, seed: int, **overrides: Any):
    """(dataset name, DataSplits) for a checkpoint: its own dataset unless one is given, checked to fit."""
    from robustcompress.checkpoint import check_compatible

    dataset = data.dataset or meta.get("data", {}).get("dataset")
    if not dataset:
        raise ConfigError(f"{checkpoint} does not say which dataset it was trained on; give --dataset")
    splits = data.load(dataset, seed=seed, **overrides)
    check_compatible(meta, splits.info.num_classes, splits.info.in_channels, dataset)
    return dataset, splits


def checkpoint_test_split(checkpoint, meta: dict[str, Any], data: DataArgs, *, seed: int):
    """The data a checkpoint is measured on (its own dataset unless one is given); no training data."""
    return checkpoint_data(checkpoint, meta, data, seed=seed, **TEST_ONLY)[1]


def training_inputs(checkpoint, data: DataArgs, *, seed: int):
    """What training a checkpoint further needs: (model, meta, dataset name, DataSplits, its TrainConfig)."""
    from robustcompress.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    dataset, splits = checkpoint_data(checkpoint, meta, data, seed=seed)
    train_cfg = TrainConfig.parse(
        meta.get("training", {}).get("config", {}), where="checkpoint training config"
    )
    return model, meta, dataset, splits, train_cfg
