"""Latency that can be compared: models timed in turn, round by round, their ratio per round.

A forward time measured on its own measures the machine too: a neighbour that starts while one
model is timed and stops before the next makes the slower model look faster. `measure_interleaved`
times every compared model once per round, in an order rotated each round, so a load that comes
and goes falls on all of them alike, and each model's time is divided by the reference's of the same
round. A model is flagged as not rankable against the reference when the middle half of those
per-round ratios (their 25th to 75th percentile) contains 1: in at least a quarter of the rounds
each of the two was the faster one.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from robustcompress.capabilities import runs_in_torch
from robustcompress.modes import eval_mode

Runtime = Literal["eager", "torchscript", "onnxruntime"]


@dataclass(frozen=True)
class LatencyStats:
    """One model's timed rounds (milliseconds) and its per-round ratio to the reference."""

    times_ms: tuple[float, ...]
    ratios: tuple[float, ...]  # this model's time / the reference's, round by round

    @property
    def n(self) -> int:
        return len(self.times_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def iqr_ms(self) -> float:
        lo, hi = _quartiles(self.times_ms)
        return hi - lo

    @property
    def ratio(self) -> float:
        """Median per-round ratio to the reference (> 1: slower than the reference)."""
        return statistics.median(self.ratios)

    @property
    def ratio_quartiles(self) -> tuple[float, float]:
        return _quartiles(self.ratios)

    @property
    def rankable(self) -> bool:
        """False when the middle half of the per-round ratios contains 1 (see the module docstring)."""
        lo, hi = self.ratio_quartiles
        return not lo <= 1.0 <= hi


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def measure_interleaved(
    models: Mapping[str, Callable[[torch.Tensor], Any]],
    example: torch.Tensor,
    *,
    rounds: int = 20,
    warmup: int = 3,
    reference: str | None = None,
) -> dict[str, LatencyStats]:
    """Time each of `models` on `example`, once per round in an order rotated every round.

    Modules run in eval mode; everything under `torch.inference_mode`, after `warmup` untimed calls
    each. On CUDA (an example on a GPU) the device is synchronised around each call. `reference`
    (default: the first model) is what the per-round ratios divide by.
    """
    labels = list(models)
    if not labels or rounds < 1:
        raise ValueError("measure_interleaved needs at least one model and one round")
    reference = labels[0] if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models {labels}")
    sync = torch.cuda.synchronize if example.is_cuda else (lambda *a: None)
    times: dict[str, list[float]] = {label: [] for label in labels}
    scripted = torch.jit.ScriptModule  # frozen for inference already: no train flag to set
    modules = [m for m in models.values() if isinstance(m, nn.Module) and not isinstance(m, scripted)]
    with _all_eval(modules), torch.inference_mode():
        for _ in range(warmup):
            for label in labels:
                models[label](example)
        sync()
        for r in range(rounds):
            shift = r % len(labels)
            for label in labels[shift:] + labels[:shift]:
                t0 = time.perf_counter()
                models[label](example)
                sync()
                times[label].append(1000 * (time.perf_counter() - t0))
    ref = times[reference]
    return {
        label: LatencyStats(tuple(t), tuple(a / b for a, b in zip(t, ref, strict=True)))
        for label, t in times.items()
    }


class _all_eval:
    """eval_mode for several modules at once (each restored as it was)."""

    def __init__(self, modules: list[nn.Module]):
        self.contexts = [eval_mode(m) for m in modules]

    def __enter__(self):
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.contexts):
            c.__exit__(*exc)


def deployed(
    model: nn.Module, runtime: Runtime, example: torch.Tensor, threads: int | None = None
) -> Callable:
    """A CPU callable running `model` as `runtime` would (masks, clusters baked in for the others)."""
    if runtime == "eager":
        return copy.deepcopy(model).cpu().eval()
    from robustcompress.compression.quantization.int8 import export_onnx, ort_session, plain_float_copy

    plain = plain_float_copy(model)
    if runtime == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python values in forward
            return torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(plain, example)))
    session = ort_session(export_onnx(plain, example), threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def metric_key(runtime: Runtime, batch_size: int) -> str:
    """`latency.cpu_ms.b64` (eager) or `latency.<runtime>.cpu_ms.b64`."""
    runtime_part = "" if runtime == "eager" else f"{runtime}."
    return f"latency.{runtime_part}cpu_ms.b{batch_size}"


def compared_latency(
    models: Mapping[str, nn.Module],
    shape: Sequence[int],
    *,
    batch_sizes: Sequence[int] = (1, 64),
    runtimes: Sequence[Runtime] = ("eager",),
    rounds: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    reference: str | None = None,
) -> dict[str, dict[str, Any]]:
    """CPU latency metrics of each model, all measured interleaved: {label: metrics}.

    Per runtime and batch size: `<key>` the median ms, `<key>.iqr` its interquartile range (ms)
    and, with a `reference`, `<key>.ratio` (median per-round ratio to it) and `flag.<key>` when the
    two cannot be ranked. `latency.cpu_threads` and `latency.rounds` say how it was measured. A
    compiled model (ONNX Runtime int8) runs only as itself ("eager"); a runtime that cannot take a
    model leaves it out with a warning.
    """
    out: dict[str, dict[str, Any]] = {label: {} for label in models}
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for runtime in runtimes:
            for b in batch_sizes:
                x = torch.rand(b, *shape, generator=torch.Generator().manual_seed(0))
                runs = _deploy_all(models, runtime, x, threads)
                if not runs:
                    continue
                ref = reference if reference in runs else None
                stats = measure_interleaved(runs, x, rounds=rounds, warmup=warmup, reference=ref)
                key = metric_key(runtime, b)
                for label, s in stats.items():
                    out[label][key] = s.median_ms
                    out[label][f"{key}.iqr"] = s.iqr_ms
                    if ref is not None:
                        out[label][f"{key}.ratio"] = s.ratio
                        if label != ref and not s.rankable:
                            lo, hi = s.ratio_quartiles
                            out[label][f"flag.{key}"] = (
                                f"cannot rank against {ref}: the middle half of the per-round "
                                f"time ratios ({lo:.2f}-{hi:.2f}) contains 1"
                            )
    finally:
        torch.set_num_threads(previous)
    for metrics in out.values():
        metrics["latency.cpu_threads"] = threads or previous
        metrics["latency.rounds"] = rounds
    return out


def _deploy_all(
    models: Mapping[str, nn.Module], runtime: Runtime, x: torch.Tensor, threads: int | None
) -> dict[str, Callable]:
    runs = {}
    for label, model in models.items():
        if runtime != "eager" and not runs_in_torch(model):
            continue  # a compiled model already runs in its own runtime
        try:
            runs[label] = deployed(model, runtime, x, threads)
        except Exception as exc:
            if runtime == "eager":
                raise
            # a model the tracer or exporter cannot take still gets its other metrics
            warnings.warn(
                f"latency of {label} in {runtime} not measured: {type(exc).__name__}: {exc}", stacklevel=3
            )
    return runs
