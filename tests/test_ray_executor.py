"""The Ray executor against one local Ray instance (2 CPUs) shared by this module's tests.

The same study on Ray and locally gives the same metrics and store rows; the shared baseline is
trained once (counted by a test objective); a worker killed mid-stage is rerun by Ray; a user error
in one experiment fails it alone (exit 2 naming it) while the others are stored; the instance
listens on loopback addresses only; bad [execution] settings are refused with exit 2.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import ray
from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.experiments.executors import start_local
from robustcompress.experiments.store import ResultsStore
from tests.tiny_study import tiny_config


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    start_local(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


def _study(tmp_path: Path, data_root: Path, recipes: str) -> Path:
    count = tmp_path / "trainings.txt"
    extra = f'objective = "counted_ce"\nobjective_params = {{count = "{count}"}}\n{recipes}'
    path = tiny_config(tmp_path, data_root, extra, limit_train=300, limit_test=100)
    text = path.read_text().replace(
        "[data]",
        'plugins = ["tests.plugins.cluster_probe", "tests.plugins.sharpen"]\n'
        'evaluations = [{type = "clean"}, {type = "confidence"}]\n[data]',
        1,
    )
    path.write_text(text)
    return path


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args, "--quiet", "--json"])


def _rows(out: Path) -> dict:
    return {k: v for k, v in ResultsStore(out / "results.sqlite").metrics().items()}


def test_ray_study_matches_local_trains_the_baseline_once_and_survives_a_killed_worker(tmp_path, data_root):
    marker = tmp_path / "killed-once"
    recipes = f"""
[[recipes]]
name = "plain"
stages = []
[[recipes]]
name = "pruned"
stages = [{{type = "prune", amount = 0.5, epochs = 0}}]
[[recipes]]
name = "pruned-sharp"
stages = [
    {{type = "prune", amount = 0.5, epochs = 0}},
    {{type = "die_once", marker = "{marker}"}},
    {{type = "sharpen"}},
]
"""
    path = _study(tmp_path, data_root, recipes)
    on_ray = _run(str(path), "--executor", "ray")
    assert on_ray.exit_code == 0, on_ray.output
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a worker died in the stage
    trainings = (tmp_path / "trainings.txt").read_text().split()
    assert len(trainings) == 1 and int(trainings[0]) != os.getpid()  # one training, on a worker

    local = _run(str(path), "--executor", "local", "--out", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    assert len((tmp_path / "trainings.txt").read_text().split()) == 2  # the local run trained its own
    ray_metrics, local_metrics = json.loads(on_ray.stdout), json.loads(local.stdout)
    assert list(ray_metrics) == ["tiny/plain", "tiny/pruned", "tiny/pruned-sharp"]
    assert ray_metrics == local_metrics
    assert _rows(tmp_path / "out") == _rows(tmp_path / "local")
    sharp = ray_metrics["tiny/pruned-sharp"]
    assert sharp["final"]["conf.mean"] > sharp["baseline"]["conf.mean"]  # the stages after the kill ran
    saved = json.loads((tmp_path / "out" / "tiny_pruned-sharp" / "metrics.json").read_text())
    assert saved["models"] == sharp


def test_a_user_error_fails_its_experiment_and_the_others_are_stored(tmp_path, data_root):
    recipes = """
[[recipes]]
name = "good"
stages = [{type = "sharpen"}]
[[recipes]]
name = "bad"
stages = [{type = "refuse"}]
"""
    result = _run(str(_study(tmp_path, data_root, recipes)), "--executor", "ray")
    assert result.exit_code == 2
    assert "experiment tiny/bad failed: refuse: this stage always fails" in result.output
    assert "Traceback" not in result.output
    rows = _rows(tmp_path / "out")
    assert set(rows) == {("tiny/good", "baseline"), ("tiny/good", "final"), ("tiny/bad", "baseline")}
    assert (tmp_path / "out" / "tiny_good" / "metrics.json").is_file()
    assert not (tmp_path / "out" / "tiny_bad" / "metrics.json").exists()


def _listening() -> dict[str, str]:
    """{socket inode: 'address:port' in /proc's hex} of every listening TCP socket of this machine."""
    out = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out[fields[9]] = fields[1]
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def _sockets(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _pid() -> int:
    return os.getpid()


LOOPBACK = (
    "0100007F",
    "0000000000000000FFFF00000100007F",
    "00000000000000000000000001000000",
)  # v4, v4-in-v6, ::1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads listening sockets from /proc")
def test_the_local_instance_listens_on_loopback_only_and_starts_no_dashboard():
    ray.get(ray.remote(num_cpus=1)(_pid).remote())  # a worker process is up too
    listening = _listening()
    addresses = {}
    for pid in _descendants(os.getpid()):
        for inode in _sockets(pid) & listening.keys():
            addresses[pid] = [*addresses.get(pid, []), listening[inode]]
    assert len(addresses) >= 3  # the driver, the GCS, the raylet, the workers: all checked
    outside = {pid: a for pid, a in addresses.items() if any(x.split(":")[0] not in LOOPBACK for x in a)}
    assert outside == {}
    ports = {int(x.split(":")[1], 16) for a in addresses.values() for x in a}
    assert 8265 not in ports  # no dashboard
    assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"


def test_bad_execution_settings_are_refused_with_exit_2(tmp_path, data_root, monkeypatch):
    path = _study(tmp_path, data_root, "")
    zero = _run(str(path), "--workers", "0")
    assert zero.exit_code == 2 and "execution" in zero.output and "workers" in zero.output

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    far = _run(str(path), "--executor", "ray", "--set", f'execution.address="127.0.0.1:{port}"')
    assert far.exit_code == 2 and f"127.0.0.1:{port}" in far.output and "no Ray cluster answers" in far.output

    gpus = _run(str(path), "--executor", "ray", "--set", "execution.gpus=1")
    assert gpus.exit_code == 2 and "gpus = 1 per task" in gpus.output
    assert not (tmp_path / "out" / "artifacts").exists()  # nothing was computed

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    missing = _run(str(path), "--executor", "ray")
    assert missing.exit_code == 2 and 'pip install "robustcompress[ray]"' in missing.output
