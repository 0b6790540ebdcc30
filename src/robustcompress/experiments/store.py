"""The results store: one SQLite file per output folder, one row per (experiment, model, metric).

Rows are written as soon as an evaluation finishes, so an interrupted run keeps what it computed
and a rerun skips evaluations already stored.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustcompress.errors import ConfigError

RESULTS_DB = "results.sqlite"  # the store's file name in an output folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    experiment TEXT NOT NULL,      -- experiment name
    model TEXT NOT NULL,           -- 'baseline', 'final' or 'stage<i>:<type>'
    artifact TEXT NOT NULL,        -- hash of the model artifact
    evaluation TEXT NOT NULL,      -- hash of the evaluation spec
    name TEXT NOT NULL,            -- dotted metric name, e.g. acc.clean
    value REAL,                    -- numeric value, or NULL for text metrics (flags)
    text TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (experiment, model, evaluation, name)
);
"""


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


class ResultsStore:
    """Read-write for the runner; `ResultsStore.open(folder)` reads a finished one without locking it."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(SCHEMA)

    @classmethod
    def open(cls, folder: str | Path) -> ResultsStore:
        """The existing store of an output folder, read-only (reports, `robustcompress results`)."""
        return cls(results_path(folder), readonly=True)

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        return sqlite3.connect(self.path, timeout=30)

    def _read(self, query: str, args: Iterable[Any] = ()) -> list[tuple]:
        """All rows of a query; a store that is not one is a ConfigError, not a traceback."""
        try:
            db = self._connect()
            try:
                return db.execute(query, tuple(args)).fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{self.path} is not a readable results store ({exc}); rerun `robustcompress run`"
            ) from None

    def add_experiment(self, name: str, config: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?)",
                (name, json.dumps(config, sort_keys=True, default=str), time.time()),
            )

    def get(self, artifact: str, evaluation: str) -> dict[str, Any] | None:
        """The stored metrics of one evaluation of one artifact (whichever experiment ran it), or None.

        Recipes share their baseline artifact, so its evaluations run once for all of them.
        """
        with self._connect() as db:
            row = db.execute(
                "SELECT experiment, model FROM metrics WHERE artifact=? AND evaluation=? LIMIT 1",
                (artifact, evaluation),
            ).fetchone()
            if row is None:
                return None
            rows = db.execute(
                "SELECT name, value, text FROM metrics"
                " WHERE experiment=? AND model=? AND artifact=? AND evaluation=?",
                (*row, artifact, evaluation),
            ).fetchall()
        return {name: _stored(value, text) for name, value, text in rows}

    def add_metrics(
        self, experiment: str, model: str, artifact: str, evaluation: str, metrics: dict[str, Any]
    ) -> None:
        now = time.time()
        rows = [
            (
                experiment,
                model,
                artifact,
                evaluation,
                name,
                float(v) if _is_number(v) else None,
                None if _is_number(v) else str(v),
                now,
            )
            for name, v in metrics.items()
        ]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def record(self, experiment: str, model: str, artifact: str) -> ModelRecord:
        """Where the pipeline looks up and keeps the metrics of one model of one experiment."""
        return ModelRecord(self, experiment, model, artifact)

    def metrics(self, experiment: str | None = None, model: str | None = None) -> dict[tuple[str, str], dict]:
        """{(experiment, model): {metric: value}} for the latest artifact of each (experiment, model)."""
        query = "SELECT experiment, model, name, value, text FROM metrics"
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if where:
            query += " WHERE " + " AND ".join(where)
        out: dict[tuple[str, str], dict] = {}
        for exp, mdl, name, value, text in self._read(query + " ORDER BY created", args):
            out.setdefault((exp, mdl), {})[name] = _stored(value, text)
        return out

    def records(self) -> list[tuple[str, str, str, str, Any]]:
        """Every stored metric as (experiment, model, artifact, name, value), oldest first."""
        rows = self._read(
            "SELECT experiment, model, artifact, name, value, text FROM metrics ORDER BY created"
        )
        return [(e, m, a, n, _stored(v, t)) for e, m, a, n, v, t in rows]

    def experiments(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM experiments ORDER BY created")]

    def configs(self) -> dict[str, dict[str, Any]]:
        """Each experiment's config as it was run, in run order."""
        rows = self._read("SELECT name, config FROM experiments ORDER BY created")
        return {name: json.loads(config) for name, config in rows}


@dataclass(frozen=True)
class ModelRecord:
    """One model of one experiment: evaluations are looked up by artifact, so an artifact shared by
    several experiments (a recipe grid's baseline) is evaluated once, and written under this
    experiment and model label."""

    store: ResultsStore
    experiment: str
    model: str
    artifact: str

    def get(self, evaluation: str) -> dict[str, Any] | None:
        return self.store.get(self.artifact, evaluation)

    def put(self, evaluation: str, metrics: dict[str, Any]) -> None:
        self.store.add_metrics(self.experiment, self.model, self.artifact, evaluation, metrics)


def _stored(value: float | None, text: str | None) -> Any:
    """A metric as it was added: numbers live in `value`, everything else in `text`."""
    return value if value is not None else text


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)  # bools count: stored as 0/1


def select_metrics(rows: dict[tuple[str, str], dict], patterns: Iterable[str]) -> list[str]:
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


def format_table(rows: dict[tuple[str, str], dict], columns: Iterable[str] | None = None) -> str:
    """A plain-text table: one row per (experiment, model), one column per metric."""
    if not rows:
        return "(no results)"
    cols = (
        list(columns)
        if columns
        else sorted({k for m in rows.values() for k in m if not k.startswith("flag.")})
    )
    header = ["experiment", "model", *cols]
    body = [[exp, mdl, *(_fmt(m.get(c)) for c in cols)] for (exp, mdl), m in rows.items()]
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
