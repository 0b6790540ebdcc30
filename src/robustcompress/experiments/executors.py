"""Two ways to run a study graph: one task at a time in this process, or as Ray tasks on a cluster.

Both run the same tasks (tasks.py) of the same graph; only the driver writes the results store.
Ray is imported only by the Ray executor. Its tasks exchange files (checkpoints in the output
folder, which must be shared by every node) and small JSON-able values (keys, configs, metrics),
never pickled models; a task killed with its worker is rerun by Ray (`max_retries`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from robustcompress.errors import ConfigError, RobustCompressError
from robustcompress.experiments.config import ExecutionConfig, ExperimentConfig
from robustcompress.experiments.graph import ArtifactTask, EvalTask
from robustcompress.experiments.tasks import Collected, Workspace, stderr_log

RAY_MISSING = 'the ray executor needs Ray, which is not installed: pip install "robustcompress[ray]"'


def make_executor(execution: ExecutionConfig, log: Callable[[str], None] = stderr_log) -> Any:
    if execution.executor == "ray":
        return RayExecutor(execution, log)
    if execution.workers not in (None, 1):
        log(
            f"the local executor runs one task at a time ([execution] workers = {execution.workers} "
            "is for ray)"
        )
    return LocalExecutor(log)


class LocalExecutor:
    """Every task in graph order in this process; models stay in memory while a later task needs them."""

    def __init__(self, log: Callable[[str], None] = stderr_log):
        self.log = log

    def run(self, study: Any, progress: bool = True) -> None:
        ws = Workspace(study.out, progress=progress, log=self.log)
        last_use = {}  # artifact key -> index of the last task that needs it in memory
        for i, tid in enumerate(study.todo):
            task = study.graph.task(tid)
            for key in _models_of(task):
                last_use[key] = i
        for i, tid in enumerate(study.todo):
            task = study.graph.task(tid)
            if not study.blocked(tid):
                try:
                    _run_here(ws, study, task)
                except RobustCompressError as exc:
                    study.fail(tid, exc)
            for key in [k for k, last in last_use.items() if last == i]:
                ws.release(key)


def _run_here(ws: Workspace, study: Any, task: ArtifactTask | EvalTask) -> None:
    cfg = study.graph.experiments[task.experiment]
    if isinstance(task, ArtifactTask):
        ws.make_artifact(cfg, task)
        return
    rows = study.record(task)
    ws.evaluate(cfg, task, rows, study.baseline_metrics(task))
    study.finish_evaluation(task, rows.known, rows)


def _models_of(task: ArtifactTask | EvalTask) -> list[str]:
    if isinstance(task, ArtifactTask):
        return [k for k in (task.key, task.parent, task.baseline) if k]
    return [task.artifact, task.baseline]


class RayExecutor:
    """Each task a Ray task with the CPUs and GPUs of `[execution]`, submitted once its prerequisites
    are done, at most `workers` at a time; a local instance (no `address`) binds to 127.0.0.1 only."""

    def __init__(self, execution: ExecutionConfig, log: Callable[[str], None] = stderr_log):
        self.execution = execution
        self.log = log

    def run(self, study: Any, progress: bool = True) -> None:
        ray, started = connect(self.execution)
        try:
            check_resources(ray, self.execution)
            with contextlib.redirect_stdout(
                sys.stderr
            ):  # Ray echoes its workers' logs: stdout is for results
                self._schedule(ray, study)
        finally:
            if started:
                ray.shutdown()

    def _schedule(self, ray: Any, study: Any) -> None:
        ex = self.execution
        options = {"num_cpus": ex.cpus, "num_gpus": ex.gpus, "max_retries": ex.max_retries}
        make = ray.remote(**options)(artifact_job)
        evaluate = ray.remote(**options)(evaluation_job)
        out = str(study.out.resolve())
        limit = ex.workers or sys.maxsize
        pending = list(study.todo)
        unfinished = set(pending)
        running: dict[Any, str] = {}
        while pending or running:
            for tid in list(pending):
                if len(running) >= limit:
                    break
                task = study.graph.task(tid)
                if study.blocked(tid):
                    pending.remove(tid)
                    unfinished.discard(tid)
                elif not any(d in unfinished for d in task.deps):
                    cfg = _raw(study.graph.experiments[task.experiment])
                    if isinstance(task, ArtifactTask):
                        ref = make.remote(out, cfg, asdict(task), ex.cpus)
                    else:
                        stored = study.stored(task)
                        ref = evaluate.remote(
                            out, cfg, asdict(task), stored, study.baseline_metrics(task), ex.cpus
                        )
                    running[ref] = tid
                    pending.remove(tid)
            if not running:
                break
            [ref], _ = ray.wait(list(running), num_returns=1)
            tid = running.pop(ref)
            unfinished.discard(tid)
            self._collect(ray, study, tid, ref)

    def _collect(self, ray: Any, study: Any, tid: str, ref: Any) -> None:
        """The result of a finished task into the study; a user error fails its experiments only."""
        task = study.graph.task(tid)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, RobustCompressError):
                study.fail(tid, cause)
                return
            raise (cause if isinstance(cause, BaseException) else exc) from None
        except ray.exceptions.RayError as exc:  # its worker died more often than max_retries allows
            tries = self.execution.max_retries + 1
            study.fail(tid, RobustCompressError(f"its worker died {tries} times ({type(exc).__name__})"))
            return
        if isinstance(task, EvalTask):
            study.finish_evaluation(task, value)


def _raw(cfg: ExperimentConfig) -> dict[str, Any]:
    """An experiment config as JSON-able data that parses back to the same config on a worker."""
    return cfg.model_dump(mode="json", exclude_unset=True)


# --- what runs on a worker -------------------------------------------------------------------------

_WORKSPACES: dict[str, Workspace] = {}  # one per output folder in a worker process (data splits reused)


def _workspace(output: str, cpus: float) -> Workspace:
    from robustcompress.threads import configure_threads

    configure_threads(max(1, int(cpus)))  # the task's CPU share: no thread waits for a taken core
    if output not in _WORKSPACES:
        _WORKSPACES[output] = Workspace(output, progress=False, keep_models=False)
    return _WORKSPACES[output]


def artifact_job(output: str, cfg: dict[str, Any], task: dict[str, Any], cpus: float) -> str:
    """A Ray task: make one artifact in <output>/artifacts (its parents read from there); its key."""
    ws = _workspace(output, cpus)
    ws.make_artifact(ExperimentConfig.parse(cfg), ArtifactTask(**task))
    return task["key"]


def evaluation_job(
    output: str,
    cfg: dict[str, Any],
    task: dict[str, Any],
    stored: dict[str, dict[str, Any]],
    baseline_metrics: dict[str, Any] | None,
    cpus: float,
) -> dict[str, dict[str, Any]]:
    """A Ray task: the metrics of one evaluation task by evaluation key (`stored` ones not rerun)."""
    ws = _workspace(output, cpus)
    record = Collected(stored)
    ws.evaluate(ExperimentConfig.parse(cfg), EvalTask(**task), record, baseline_metrics)
    return record.known


# --- connecting -------------------------------------------------------------------------------------


def connect(execution: ExecutionConfig) -> tuple[Any, bool]:
    """Ray, connected to `address` or to a new local instance; whether this call started it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    if execution.address is not None:
        _check_reachable(execution.address)
    if ray.is_initialized():  # the caller's own Ray connection
        return ray, False
    if execution.address is None:
        cpus = execution.cpus * execution.workers if execution.workers else None
        start_local(cpus, dashboard=execution.dashboard)
        return ray, True
    try:
        ray.init(address=execution.address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise ConfigError(
            f"[execution] address = {execution.address!r}: cannot connect to a Ray cluster there ({exc}); "
            "start one (`ray start --head`) or leave address out for a local instance"
        ) from None
    return ray, True


def start_local(
    num_cpus: float | None = None, *, dashboard: bool = False, num_gpus: int | None = None
) -> None:
    """Start a Ray instance on this machine that only this machine can reach.

    Ray binds its servers to the node's address, which it sets to the machine's network address
    even when asked for 127.0.0.1, except in its single-node mode (macOS, Windows); that mode is
    switched on for the start, so every Ray process listens on the loopback interface. The
    dashboard and the job server are off unless `dashboard` (then on 127.0.0.1 too). The workers
    import what this process imports (its sys.path).
    """
    import ray
    from ray._private import ray_constants

    single_node = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",  # a new instance, never one that RAY_ADDRESS or `ray start` left around
            num_cpus=None if num_cpus is None else max(1, round(num_cpus)),
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            runtime_env={"env_vars": {"PYTHONPATH": _import_path()}},
            logging_level="WARNING",
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = single_node


def _import_path() -> str:
    """This process's import path beyond the interpreter's own (the source tree, a plugin's folder)."""
    own = (sys.prefix, sys.base_prefix, sys.exec_prefix)
    extra = [str(Path(p or ".").resolve()) for p in sys.path if not any(p.startswith(o) for o in own if p)]
    return os.pathsep.join(dict.fromkeys(p for p in extra if Path(p).is_dir()))


def _check_reachable(address: str) -> None:
    """Refuse, quickly, a host:port where nothing listens (Ray itself waits a long time there)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"[execution] address = {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"[execution] address = {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one (`ray start --head`), check the address, or leave it out for a local instance"
        ) from None


def check_resources(ray: Any, execution: ExecutionConfig) -> None:
    """Refuse tasks no node can run (Ray would keep them waiting forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    if execution.gpus > gpus:
        raise ConfigError(
            f"[execution] gpus = {execution.gpus:g} per task, but no node of the Ray cluster has that many "
            f"GPUs (most on one node: {gpus:g}); set gpus = 0 or add GPU nodes"
        )
    if execution.cpus > cpus:
        raise ConfigError(
            f"[execution] cpus = {execution.cpus:g} per task, but the largest node of the Ray cluster has "
            f"{cpus:g}; lower cpus"
        )
