"""The results store keeps every run's metrics unmixed; stores of the first schema open and upgrade."""

import json
import sqlite3

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.experiments.store import ResultsStore
from robustcompress.experiments.store_schema import SCHEMA_VERSION
from tests.tiny_study import tiny_config

STUDY = """
[[evaluations]]
type = "clean"
[[evaluations]]
type = "corruption"
corruptions = ["fog"]
severities = [1]
n_examples = 50
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "pruned"
stages = [{type = "prune", method = "global", amount = 0.5, epochs = 0}]
"""


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _json(*args):
    return json.loads(_cli(*args, "--json").stdout)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_root):
    """The user's story: a study into F, then the same experiment names with another config into F.
    Returns F and each run's metrics as its `run --json` printed them."""
    tmp = tmp_path_factory.mktemp("two-runs")
    config = tiny_config(tmp, data_root, STUDY, limit_train=300, limit_test=100)
    first = _json("run", config, "--quiet")
    second = _json("run", config, "--quiet", "--set", "data.limit_test=120")
    return tmp / "out", first, second


def test_a_rerun_with_another_config_keeps_both_runs_and_tables_show_the_latest(two_runs):
    folder, first, second = two_runs
    assert first["tiny/pruned"]["final"]["acc.clean"] != second["tiny/pruned"]["final"]["acc.clean"]
    latest = _json("results", folder)
    # every metric of every model from the second run, mCE included (it was the first run's before)
    assert latest == {f"{e}|{m}": metrics for e, models in second.items() for m, metrics in models.items()}
    assert latest["tiny/pruned|final"]["mce"] == second["tiny/pruned"]["final"]["mce"]
    table = _cli("results", folder).stdout
    assert table.splitlines()[0].split()[:4] == ["experiment", "model", "acc.clean", "ce.fog"]
    assert "mce" in table.splitlines()[0].split()

    every = _json("results", folder, "--all-runs")
    runs = ResultsStore.open(folder).runs(all_runs=True)
    assert [r.experiment for r in runs] == ["tiny/plain", "tiny/pruned"] * 2
    expected = {}
    for run in runs:
        measured = (first if run.id <= 2 else second)[run.experiment]
        expected.update({f"{run.experiment}|{m}|run{run.id}": v for m, v in measured.items()})
    assert every == expected
    assert [r.config["data"]["limit_test"] for r in runs] == [100, 100, 120, 120]
    text = _cli("results", folder, "--all-runs", "--metrics", "acc.clean").stdout
    assert text.splitlines()[0].split() == ["experiment", "run", "model", "acc.clean"]
    assert len(text.splitlines()) == 2 + 6  # two runs of plain (baseline) and pruned (baseline, final)


def test_report_columns_read_the_latest_run(two_runs):
    folder, _, second = two_runs
    out = _cli("report", folder, "--columns", "acc.clean,mce")
    header, _, *rows = out.stdout.splitlines()
    assert header.split() == ["model", "pareto", "acc.clean", "mce"]
    final = next(r for r in rows if r.startswith("pruned"))
    measured = second["tiny/pruned"]["final"]
    assert final.split()[1] == f"{100 * measured['acc.clean']:.2f}%"  # the latest run's accuracy
    assert f"{measured['mce']:.1f}" in final  # beside the latest run's mCE


def test_a_rerun_with_the_same_config_continues_its_run(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    config = {"name": "e", "seed": 0}
    first = store.add_experiment("e", config)
    assert store.add_experiment("e", dict(config)) == first
    other = store.add_experiment("e", {"name": "e", "seed": 1})
    assert other != first
    assert store.add_experiment("e", config) not in (first, other)  # back to the first config: a new run
    latest = store.add_experiment("e", config)
    # another executor computes the same: the same run
    assert store.add_experiment("e", {**config, "execution": {"executor": "ray", "workers": 2}}) == latest


def test_an_evaluation_is_stored_once_per_artifact_and_shown_by_every_run_that_used_it(tmp_path):
    store = ResultsStore(tmp_path / "results.sqlite")
    store.add_experiment("a", {"name": "a"})
    store.add_experiment("b", {"name": "b"})
    store.record("a", "baseline", "art0").put("clean", {"acc.clean": 0.5})
    assert store.record("b", "baseline", "art0").get("clean") == {"acc.clean": 0.5}
    store.record("b", "baseline", "art0").put("clean", {"acc.clean": 0.5})
    assert store.metrics() == {("a", "baseline"): {"acc.clean": 0.5}, ("b", "baseline"): {"acc.clean": 0.5}}
    # a model that becomes another artifact in the same run drops the old artifact's metrics
    store.record("b", "baseline", "art1").put("size", {"size.bytes": 10})
    assert store.metrics("b") == {("b", "baseline"): {"size.bytes": 10}}


# ---- stores written by schema 1 ---------------------------------------------------------------

SCHEMA1 = """
CREATE TABLE experiments (name TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE metrics (
    experiment TEXT NOT NULL, model TEXT NOT NULL, artifact TEXT NOT NULL, evaluation TEXT NOT NULL,
    name TEXT NOT NULL, value REAL, text TEXT, created REAL NOT NULL,
    PRIMARY KEY (experiment, model, evaluation, name)
);
"""


def _schema1_store(path):
    """A store as the first schema left it after the user's story: demo/adv's final model measured on
    artifact A, then measured again on B (another config): B's rows replaced A's acc.clean, mCE and
    ce.fog (same key) and left A's err.fog.1 behind; demo/plain measured once."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA1)
    db.executemany(
        "INSERT INTO experiments VALUES (?, ?, ?)",
        [("demo/plain", '{"name": "demo/plain"}', 1.0), ("demo/adv", '{"name": "demo/adv", "v": 2}', 5.0)],
    )
    rows = [
        ("demo/plain", "baseline", "base", "clean", "acc.clean", 0.8, None, 1.0),
        ("demo/adv", "baseline", "base", "clean", "acc.clean", 0.8, None, 2.0),
        ("demo/adv", "final", "A", "corr", "err.fog.1", 0.3, None, 2.0),
        ("demo/adv", "final", "B", "clean", "acc.clean", 0.77, None, 6.0),
        ("demo/adv", "final", "B", "corr", "mce", 59.8, None, 6.0),
        ("demo/adv", "final", "B", "corr", "ce.fog", 59.8, None, 6.0),
        ("demo/adv", "final", "B", "flags", "flag.zero_grad", None, "masking", 6.0),
    ]
    db.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


EXPECTED = {
    ("demo/plain", "baseline"): {"acc.clean": 0.8},
    ("demo/adv", "baseline"): {"acc.clean": 0.8},
    ("demo/adv", "final"): {"acc.clean": 0.77, "mce": 59.8, "ce.fog": 59.8, "flag.zero_grad": "masking"},
}


def test_a_schema1_store_is_read_as_it_is_and_upgraded_when_opened_for_writing(tmp_path):
    path = tmp_path / "results.sqlite"
    _schema1_store(path)
    before = path.read_bytes()
    readonly = ResultsStore.open(tmp_path)
    assert readonly.metrics() == EXPECTED
    assert readonly.configs() == {
        "demo/plain": {"name": "demo/plain"},
        "demo/adv": {"name": "demo/adv", "v": 2},
    }
    assert _json("results", tmp_path) == {f"{e}|{m}": v for (e, m), v in EXPECTED.items()}
    assert path.read_bytes() == before  # reading changed nothing

    store = ResultsStore(path)  # the runner's open upgrades it
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (
        db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 7
    )  # schema 1's rows stay for old readers
    db.close()
    assert store.metrics() == EXPECTED
    assert store.get("B", "corr") == {"mce": 59.8, "ce.fog": 59.8}
    # A's rows that B replaced are gone, so A's leftovers are incomplete: dropped, measured again
    # when a run needs them
    assert store.get("A", "clean") is None
    assert store.get("A", "corr") is None
    # a run of the old config is a new run and shows A's metrics unmixed
    store.add_experiment("demo/adv", {"name": "demo/adv", "v": 1})
    store.record("demo/adv", "baseline", "base").put("clean", {"acc.clean": 0.8})
    store.record("demo/adv", "final", "A").put("clean", {"acc.clean": 0.7})
    store.record("demo/adv", "final", "A").put("corr", {"err.fog.1": 0.3, "mce": 145.3, "ce.fog": 145.3})
    assert store.metrics("demo/adv")[("demo/adv", "final")] == {
        "acc.clean": 0.7,
        "err.fog.1": 0.3,
        "mce": 145.3,
        "ce.fog": 145.3,
    }
    assert len(store.runs("demo/adv", all_runs=True)) == 2
    assert ResultsStore(path).metrics() == store.metrics()  # opening again changes nothing


def test_a_store_of_a_newer_schema_is_refused_clearly(tmp_path):
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    out = CliRunner().invoke(main, ["results", str(tmp_path)])
    assert out.exit_code == 2 and "newer robustcompress" in out.output


def test_a_real_schema1_store_reads_the_same_before_and_after_its_upgrade(tmp_path):
    """tests/data/schema1_p002_cpu.sqlite: the store of a paper-002 CPU study written by schema 1."""
    from pathlib import Path

    path = tmp_path / "results.sqlite"
    path.write_bytes((Path(__file__).parent / "data" / "schema1_p002_cpu.sqlite").read_bytes())
    db = sqlite3.connect(path)
    old = {}
    rows = db.execute("SELECT experiment, model, name, value, text FROM metrics")
    for exp, model, name, value, text in rows:
        old.setdefault((exp, model), {})[name] = value if value is not None else text
    old_configs = {n: json.loads(c) for n, c in db.execute("SELECT name, config FROM experiments")}
    db.close()
    before = path.read_bytes()

    readonly = ResultsStore.open(tmp_path)
    assert readonly.metrics() == old
    assert readonly.configs() == old_configs
    assert len(old) > 12 and path.read_bytes() == before
    table = _cli("results", tmp_path, "--metrics", "acc.clean").stdout
    assert len(table.splitlines()) == 2 + len(old)

    store = ResultsStore(path)  # the runner's open upgrades it in place
    assert store.metrics() == old and store.configs() == old_configs
    assert ResultsStore.open(tmp_path).metrics() == old
    assert [r.experiment for r in store.runs()] == list(old_configs)  # one run per experiment
