"""The thread count: --threads / $ROBUSTCOMPRESS_THREADS for every command, and the automatic default."""

import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from robustcompress import threads
from robustcompress.cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_option_applies_before_the_command(tmp_path):
    result = CliRunner().invoke(main, ["--threads", "3", "results", str(tmp_path / "none")])
    assert torch.get_num_threads() == 3, result.output


def test_threads_environment_variable(tmp_path):
    CliRunner(env={"ROBUSTCOMPRESS_THREADS": "2"}).invoke(main, ["results", str(tmp_path / "none")])
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_thread_counts_exit_2_naming_the_option(bad, tmp_path):
    result = CliRunner().invoke(main, ["--threads", bad, "results", str(tmp_path)])
    assert result.exit_code == 2
    assert "--threads" in result.output and f"got {bad!r}" in result.output
    env = CliRunner(env={"ROBUSTCOMPRESS_THREADS": bad}).invoke(main, ["results", str(tmp_path)])
    assert env.exit_code == 2 and "ROBUSTCOMPRESS_THREADS" in env.output


def test_parse_threads():
    assert threads.parse_threads(" 4 ") == 4
    with pytest.raises(ValueError, match="at least 1"):
        threads.parse_threads("0")


def test_share_under_torchrun(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.local_share(8) == 4
    assert threads.local_share(1) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert threads.local_share(8) == 8


def test_default_counts_only_free_cores_of_the_share(monkeypatch):
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "busy_cores", lambda cpus: 1)
    assert threads.default_threads() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.default_threads() == 2
    monkeypatch.setattr(threads, "busy_cores", lambda cpus: 4)
    assert threads.default_threads() == 1


def test_a_core_kept_busy_by_another_process_is_counted():
    cpu = threads.allowed_cpus()[0]
    spin = "\n".join(
        [
            "import os, time",
            f"os.sched_setaffinity(0, {{{cpu}}})",
            "t = time.time()",
            "while time.time() - t < 5:",
            "    pass",
        ]
    )
    proc = subprocess.Popen([sys.executable, "-c", spin])
    try:
        threads.busy_cores([cpu], 0.3)  # let it start
        assert threads.busy_cores([cpu], 0.3) == 1
    finally:
        proc.kill()
        proc.wait()


def test_automatic_default_ignores_omp_only_when_unset(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert threads.configure_threads() == 1  # the user's OMP_NUM_THREADS is kept
    monkeypatch.delenv("OMP_NUM_THREADS")
    n = threads.configure_threads()
    assert 1 <= n <= len(os.sched_getaffinity(0)) and torch.get_num_threads() == n
