"""The results store's SQLite schema, and the upgrade of stores written by earlier versions.

Schema 2 keys every measured value by what produced it: (artifact hash, evaluation hash, metric).
A run (one experiment name run with one config) links each of its models to the measurements it
shows, so two runs under the same name with different configs never mix: each keeps its own links.

Schema 1 (user_version 0) had one table keyed by (experiment, model, evaluation, metric): a rerun
with another config overwrote some metrics of the first and kept the rest (adv-finetune's accuracy
of one run beside its mCE of the other). Its tables are left in place when upgrading, so a process
of the old version still writing the store does not fail; the upgrade copies them into schema 2.
"""

from __future__ import annotations

import sqlite3

from robustcompress.errors import ConfigError

SCHEMA_VERSION = 2

TABLES = [
    """CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment TEXT NOT NULL,      -- experiment name
        config TEXT NOT NULL,          -- the config as run (JSON)
        created REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS measurements (
        artifact TEXT NOT NULL,        -- hash of the model artifact
        evaluation TEXT NOT NULL,      -- hash of the evaluation spec
        name TEXT NOT NULL,            -- dotted metric name, e.g. acc.clean
        value REAL,                    -- numeric value, or NULL for text metrics (flags)
        text TEXT,
        created REAL NOT NULL,
        PRIMARY KEY (artifact, evaluation, name)
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        run INTEGER NOT NULL REFERENCES runs (id),
        model TEXT NOT NULL,           -- 'baseline', 'final' or 'stage<i>:<type>'
        artifact TEXT NOT NULL,
        evaluation TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (run, model, evaluation)
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_name ON runs (experiment)",
]


def schema_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def upgrade(db: sqlite3.Connection) -> None:
    """Bring the store of `db` (a connection in autocommit mode) to the current schema, in one
    transaction; a no-op when it is current. A store of a newer version is a ConfigError."""
    if schema_version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")  # another process may be upgrading: wait for it, then look again
    try:
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"this results store has schema {version}, written by a newer robustcompress; upgrade "
                "robustcompress to read it"
            )
        if version < SCHEMA_VERSION:
            for statement in TABLES:
                db.execute(statement)
            if _has_table(db, "metrics"):
                _copy_schema1(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return (
        db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        is not None
    )


def _copy_schema1(db: sqlite3.Connection) -> None:
    """Schema 1's rows as schema 2: one run per experiment name (its last config), each model
    linked to the artifact it was evaluated on last.

    In schema 1 a rerun with another config replaced the rows of the metrics it measured again
    (a new artifact) and left the others (the old artifact's): an artifact's rows that a newer
    artifact followed under the same (experiment, model, evaluation) may be incomplete, so they
    are not kept; a rerun measures them again.
    """
    rows = db.execute(
        "SELECT experiment, model, artifact, evaluation, name, value, text, created FROM metrics"
        " ORDER BY created, rowid"
    ).fetchall()
    configs = (
        db.execute("SELECT name, config, created FROM experiments").fetchall()
        if _has_table(db, "experiments")
        else []
    )
    runs = {name: (config, created) for name, config, created in configs}
    for experiment, *_, created in rows:  # metrics of an experiment that was never added
        runs.setdefault(experiment, ("{}", created))
    run_ids = {}
    for name, (config, created) in sorted(runs.items(), key=lambda kv: (kv[1][1], kv[0])):
        run_ids[name] = db.execute(
            "INSERT INTO runs (experiment, config, created) VALUES (?, ?, ?)", (name, config, created)
        ).lastrowid

    newest: dict[tuple[str, str, str], tuple[str, float]] = {}  # (exp, model, eval) -> (artifact, created)
    model_artifact: dict[tuple[str, str], str] = {}  # (exp, model) -> the artifact evaluated last
    for experiment, model, artifact, evaluation, *_, created in rows:
        newest[(experiment, model, evaluation)] = (artifact, created)
        model_artifact[(experiment, model)] = artifact
    complete = {(artifact, evaluation) for (_, _, evaluation), (artifact, _) in newest.items()}
    db.executemany(
        "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
        [(a, ev, n, v, t, c) for _, _, a, ev, n, v, t, c in rows if (a, ev) in complete],
    )
    db.executemany(
        "INSERT INTO results VALUES (?, ?, ?, ?, ?)",
        [
            (run_ids[experiment], model, artifact, evaluation, created)
            for (experiment, model, evaluation), (artifact, created) in newest.items()
            if model_artifact[(experiment, model)] == artifact
        ],
    )
