"""A study survives SIGKILL of its driver (local executor) at any point, and one output folder takes
one run at a time: the story of one folder, killed again and again, against an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from robustcompress.cli import main
from robustcompress.experiments.config import load_config
from robustcompress.experiments.lock import LOCK_FILE
from robustcompress.experiments.runner import plan
from tests.tiny_study import tiny_config

REPO = Path(__file__).resolve().parents[1]
STUDY = """
[[evaluations]]
type = "clean"
[[evaluations]]
type = "size"
[[recipes]]
name = "pc"
stages = [{type = "prune", method = "global", amount = 0.5, epochs = 4},
          {type = "cluster", clusters = 8, epochs = 3}]
"""


def _start(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "robustcompress", "run", str(config), "--quiet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _run_until(config: Path, line: str, sig: int = signal.SIGKILL) -> tuple[subprocess.Popen, list[str]]:
    """Start a run and send it `sig` as soon as its log shows `line`; returns it and its log so far."""
    proc = _start(config)
    log = []
    for text in proc.stderr:
        log.append(text)
        if line in text:
            proc.send_signal(sig)
            break
    else:
        raise AssertionError(f"the run ended before logging {line!r}:\n{''.join(log)}")
    if sig == signal.SIGKILL:
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    return proc, log


def _finish(config: Path) -> tuple[dict, str]:
    proc = _start(config, "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out), err


def _state(config: Path) -> list[tuple[bool, list[bool]]]:
    """Per model of the study: whether its artifact is complete, and which evaluations are stored."""
    [p] = plan(load_config(config))
    return [(a.cached, [e.stored for e in a.evaluations]) for a in p.artifacts]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_runs_resume_to_the_metrics_of_an_uninterrupted_run(tmp_path, data_root):
    def study(name: str) -> Path:
        (tmp_path / name).mkdir()
        return tiny_config(tmp_path / name, data_root, STUDY, limit_train=400, limit_test=100)

    reference, _ = _finish(study("reference"))
    config = study("killed")
    folder = tmp_path / "killed" / "out"
    [keys] = [[a.key for a in p.artifacts] for p in plan(load_config(config))]

    # a live run holds the folder (stopped mid-training): a second run is refused, writing nothing
    holder, _ = _run_until(config, "training cnn8", signal.SIGSTOP)
    try:
        before = _snapshot(folder)
        refused = CliRunner().invoke(main, ["run", str(config), "--quiet"])
        assert refused.exit_code == 2, refused.output
        assert "in use by another run" in refused.output and f"pid {holder.pid}" in refused.output
        assert _snapshot(folder) == before
    finally:
        holder.kill()  # killed during the baseline's training
        holder.wait(timeout=60)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid  # a stale lock file ...
    assert _state(config) == [(False, [False, False]), (False, []), (False, [False, False])]

    # ... does not block; killed between stages: the baseline made, the first stage just begun
    _, log = _run_until(config, "stage 0: prune")
    assert any("training cnn8" in line for line in log)
    assert _state(config) == [(True, [False, False]), (False, []), (False, [False, False])]

    # killed during a stage: the baseline is reused, the clustering stage is fine-tuning
    _, log = _run_until(config, "cluster-preserving fine-tuning")
    assert any(f"cached: {keys[0]} (baseline)" in line for line in log)
    assert not any("training cnn8" in line for line in log)
    assert _state(config) == [(True, [False, False]), (True, []), (False, [False, False])]

    # killed between evaluations: the baseline's evaluations are stored
    _, log = _run_until(config, "evaluating final: clean")
    assert _state(config) == [(True, [True, True]), (True, []), (True, [False, False])]

    resumed, log = _finish(config)
    assert f"cached: {keys[0]} (baseline)" in log and f"cached: {keys[2]} (cluster)" in log
    assert "stored: the evaluations of baseline" in log
    assert "evaluating baseline" not in log and "stage 0" not in log and "training" not in log
    assert resumed == reference  # every metric, sizes of the rcz file included
    assert resumed["tiny/pc"]["final"]["size.bytes_compressed"] > 0
    assert (folder / LOCK_FILE).read_text() == ""  # a run that ends names no holder


def test_a_killed_ray_driver_resumes_to_the_metrics_of_an_uninterrupted_local_run(tmp_path, data_root):
    """SIGKILL of the driver while its Ray workers fine-tune; the rerun (Ray again) reuses what was
    finished and ends with the local executor's metrics, sizes included."""

    def study(name: str) -> Path:
        (tmp_path / name).mkdir()
        return tiny_config(tmp_path / name, data_root, STUDY, limit_train=400, limit_test=100)

    reference, _ = _finish(study("reference"))
    config = study("killed")
    [keys] = [[a.key for a in p.artifacts] for p in plan(load_config(config))]
    proc = _start(config, "--executor", "ray", "--workers", "1")
    for text in proc.stderr:
        if "stage 0: prune" in text:  # the baseline is saved, a worker is pruning
            proc.kill()
            break
    else:
        raise AssertionError("the Ray run ended before its first stage")
    proc.wait(timeout=60)
    assert _state(config)[0][0]  # the baseline's artifact is complete

    resume = _start(config, "--executor", "ray", "--workers", "1", "--json")
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    assert f"cached: {keys[0]} (baseline)" in err and "training cnn8" not in err
    got = json.loads(out)
    assert got == reference
