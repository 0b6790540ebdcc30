"""The results store: one SQLite file per output folder, one row per (experiment, model, metric).

Rows are written as soon as an evaluation finishes, so an interrupted run keeps what it computed
and a rerun skips evaluations already stored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

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
        return {name: value if value is not None else text for name, value, text in rows}

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
        with self._connect() as db:
            for exp, mdl, name, value, text in db.execute(query + " ORDER BY created", args):
                out.setdefault((exp, mdl), {})[name] = value if value is not None else text
        return out

    def experiments(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT name FROM experiments ORDER BY created")]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)  # bools count: stored as 0/1


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
