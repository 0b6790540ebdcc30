"""The results store: one SQLite file per output folder, every metric kept with what produced it.

A metric is stored under (artifact hash, evaluation hash): the model and the evaluation spec that
measured it. A run (an experiment name run with one config) links each of its models to those
measurements, so a rerun under the same name with another config keeps both runs' metrics and
never mixes them; readers show each experiment's latest run, older ones on request. Metrics are
written as soon as an evaluation finishes, so an interrupted run keeps what it computed and a
rerun (of any experiment sharing the artifact) skips evaluations already stored.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustcompress.errors import ConfigError
from robustcompress.experiments.store_schema import SCHEMA_VERSION, schema_version, upgrade

RESULTS_DB = "results.sqlite"  # the store's file name in an output folder


def results_path(folder: str | Path) -> Path:
    """The store of an output folder (or the store file itself); a clear error if there is none."""
    folder = Path(folder)
    path = folder if folder.is_file() else folder / RESULTS_DB
    if not path.is_file():
        inside = sorted(str(p.parent) for p in folder.glob(f"*/{RESULTS_DB}")) if folder.is_dir() else []
        hint = f"; output folders inside it: {', '.join(inside)}" if inside else ""
        raise ConfigError(
            f"no results store at {path}: give the output folder of a `robustcompress run` "
            f"(the folder holding {RESULTS_DB}){hint}"
        )
    return path


@dataclass(frozen=True)
class Run:
    """One experiment name run with one config; a rerun with the same config continues it."""

    id: int
    experiment: str
    config: dict[str, Any]
    created: float

    @property
    def label(self) -> str:
        return f"{self.id} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(self.created))})"


@dataclass
class ModelMetrics:
    """The metrics one run shows for one of its models, all measured on one artifact."""

    run: Run
    model: str
    artifact: str
    metrics: dict[str, Any]


class ResultsStore:
    """Read-write for the runner (opening upgrades an older store); `ResultsStore.open(folder)`
    reads one without changing it (an older store is upgraded in a copy in memory)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._snapshot: sqlite3.Connection | None = None  # an older store, upgraded in memory
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                upgrade(db)
            finally:
                db.close()

    @classmethod
    def open(cls, folder: str | Path) -> ResultsStore:
        """The existing store of an output folder, read-only (reports, `robustcompress results`)."""
        return cls(results_path(folder), readonly=True)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the store file, committed (or rolled back) and closed."""
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=30)
        if self._snapshot is not None:
            return self._snapshot
        db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        if schema_version(db) == SCHEMA_VERSION:
            return db
        memory = sqlite3.connect(":memory:", isolation_level=None)
        db.backup(memory)
        db.close()
        upgrade(memory)
        self._snapshot = memory
        return memory

    def _read(self, query: str, args: Iterable[Any] = ()) -> list[tuple]:
        """All rows of a query; a store that is not one is a ConfigError, not a traceback."""
        try:
            db = self._connect()
            try:
                return db.execute(query, tuple(args)).fetchall()
            finally:
                if db is not self._snapshot:
                    db.close()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{self.path} is not a readable results store ({exc}); rerun `robustcompress run`"
            ) from None

    # ---- writing (the runner) -------------------------------------------------------------

    def add_experiment(self, name: str, config: dict[str, Any]) -> int:
        """Start a run of experiment `name` and return its id; the latest run of that name is
        continued instead when its config is the same (a rerun after an interruption)."""
        text = json.dumps(config, sort_keys=True, default=str)
        with self._writing() as db:
            latest = db.execute(
                "SELECT id, config FROM runs WHERE experiment=? ORDER BY id DESC LIMIT 1", (name,)
            ).fetchone()
            if latest is not None and _same_run(json.loads(latest[1]), json.loads(text)):
                return latest[0]
            return db.execute(
                "INSERT INTO runs (experiment, config, created) VALUES (?, ?, ?)", (name, text, time.time())
            ).lastrowid

    def get(self, artifact: str, evaluation: str) -> dict[str, Any] | None:
        """The stored metrics of one evaluation of one artifact (whichever run measured it), or None.

        Recipes share their baseline artifact, so its evaluations run once for all of them.
        """
        rows = self._read(
            "SELECT name, value, text FROM measurements WHERE artifact=? AND evaluation=? ORDER BY rowid",
            (artifact, evaluation),
        )
        return {name: _stored(value, text) for name, value, text in rows} if rows else None

    def add_metrics(
        self, experiment: str, model: str, artifact: str, evaluation: str, metrics: dict[str, Any]
    ) -> None:
        """Keep one evaluation's metrics of `artifact` and show them as `model` of the experiment's
        latest run (started if there is none). The model now is `artifact`: links of that run's
        model to another artifact are dropped."""
        now = time.time()
        values = [
            (artifact, evaluation, name, *((float(v), None) if _is_number(v) else (None, str(v))), now)
            for name, v in metrics.items()
        ]
        with self._writing() as db:
            row = db.execute("SELECT MAX(id) FROM runs WHERE experiment=?", (experiment,)).fetchone()
            run = row[0]
            if run is None:
                run = db.execute(
                    "INSERT INTO runs (experiment, config, created) VALUES (?, '{}', ?)", (experiment, now)
                ).lastrowid
            db.execute("DELETE FROM measurements WHERE artifact=? AND evaluation=?", (artifact, evaluation))
            db.executemany("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)", values)
            db.execute("DELETE FROM results WHERE run=? AND model=? AND artifact<>?", (run, model, artifact))
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                (run, model, artifact, evaluation, now),
            )

    def record(self, experiment: str, model: str, artifact: str) -> ModelRecord:
        """Where the pipeline looks up and keeps the metrics of one model of one experiment."""
        return ModelRecord(self, experiment, model, artifact)

    # ---- reading ----------------------------------------------------------------------------

    def runs(self, experiment: str | None = None, *, all_runs: bool = False) -> list[Run]:
        """The runs that stored metrics, oldest first: each experiment's latest, or all of them."""
        chosen = (
            "SELECT DISTINCT run FROM results"
            if all_runs
            else ("SELECT MAX(run) FROM results JOIN runs ON runs.id = results.run GROUP BY runs.experiment")
        )
        query = f"SELECT id, experiment, config, created FROM runs WHERE id IN ({chosen})"
        args: list[Any] = []
        if experiment is not None:
            query += " AND experiment = ?"
            args.append(experiment)
        rows = self._read(query + " ORDER BY id", args)
        return [Run(i, name, json.loads(config), created) for i, name, config, created in rows]

    def models(self, experiment: str | None = None, *, all_runs: bool = False) -> list[ModelMetrics]:
        """Each run's models with their metrics (runs as in `runs`), in the order they were evaluated."""
        runs = {r.id: r for r in self.runs(experiment, all_runs=all_runs)}
        if not runs:
            return []
        rows = self._read(
            "SELECT r.run, r.model, r.artifact, m.name, m.value, m.text FROM results r"
            " JOIN measurements m ON m.artifact = r.artifact AND m.evaluation = r.evaluation"
            f" WHERE r.run IN ({','.join('?' * len(runs))}) ORDER BY r.run, r.created, m.rowid",
            list(runs),
        )
        out: dict[tuple[int, str], ModelMetrics] = {}
        for run, model, artifact, name, value, text in rows:
            entry = out.setdefault((run, model), ModelMetrics(runs[run], model, artifact, {}))
            entry.metrics[name] = _stored(value, text)
        return list(out.values())

    def metrics(self, experiment: str | None = None, model: str | None = None) -> dict[tuple[str, str], dict]:
        """{(experiment, model): {metric: value}} of each experiment's latest run."""
        return {
            (m.run.experiment, m.model): m.metrics
            for m in self.models(experiment)
            if model is None or m.model == model
        }

    def records(self) -> list[tuple[str, str, str, str, Any]]:
        """Every metric of each experiment's latest run as (experiment, model, artifact, name, value)."""
        return [
            (m.run.experiment, m.model, m.artifact, name, value)
            for m in self.models()
            for name, value in m.metrics.items()
        ]

    def experiments(self) -> list[str]:
        return [r.experiment for r in self.runs()]

    def configs(self) -> dict[str, dict[str, Any]]:
        """Each experiment's config as its latest run ran it, in run order."""
        return {r.experiment: r.config for r in self.runs()}


@dataclass(frozen=True)
class ModelRecord:
    """One model of one experiment: evaluations are looked up by artifact, so an artifact shared by
    several experiments (a recipe grid's baseline) is evaluated once, and shown under this
    experiment's latest run and model label."""

    store: ResultsStore
    experiment: str
    model: str
    artifact: str

    def get(self, evaluation: str) -> dict[str, Any] | None:
        return self.store.get(self.artifact, evaluation)

    def put(self, evaluation: str, metrics: dict[str, Any]) -> None:
        self.store.add_metrics(self.experiment, self.model, self.artifact, evaluation, metrics)


NOT_A_NEW_RUN = ("execution",)  # config sections that change how a run is executed, not what it computes


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configs of one experiment name are one run: equal but for `NOT_A_NEW_RUN`
    (rerunning on Ray what the local executor started continues its run)."""
    drop = lambda c: {k: v for k, v in c.items() if k not in NOT_A_NEW_RUN}  # noqa: E731
    return drop(a) == drop(b)


def _stored(value: float | None, text: str | None) -> Any:
    """A metric as it was added: numbers live in `value`, everything else in `text`."""
    return value if value is not None else text


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)  # bools count: stored as 0/1


def select_metrics(rows: dict[tuple[str, ...], dict], patterns: Iterable[str]) -> list[str]:
    """The stored metric names that names or fnmatch patterns choose, in the patterns' order.

    A name or pattern that matches no stored metric is a ConfigError listing the stored ones.
    """
    stored = sorted({k for m in rows.values() for k in m})
    chosen: list[str] = []
    unknown = []
    for pattern in patterns:
        matches = [k for k in stored if fnmatch.fnmatchcase(k, pattern)]
        if not matches:
            unknown.append(pattern)
        chosen += [k for k in matches if k not in chosen]
    if unknown:
        raise ConfigError(
            f"no stored metric matches {', '.join(unknown)}; stored metrics: {', '.join(stored) or '(none)'}"
        )
    return chosen


def format_table(
    rows: dict[tuple[str, ...], dict],
    columns: Iterable[str] | None = None,
    keys: tuple[str, ...] = ("experiment", "model"),
) -> str:
    """A plain-text table: one row per key (by default (experiment, model)), one column per metric."""
    if not rows:
        return "(no results)"
    cols = (
        list(columns)
        if columns
        else sorted({k for m in rows.values() for k in m if not k.startswith("flag.")})
    )
    header = [*keys, *cols]
    body = [[*key, *(_fmt(m.get(c)) for c in cols)] for key, m in rows.items()]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1000:
            return f"{int(v)}"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)
