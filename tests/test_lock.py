"""The output-folder lock: one holder at a time, named to whoever is refused, never left held."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustcompress.experiments.lock import LOCK_FILE, FolderInUse, output_lock

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_a_held_folder_is_refused_naming_its_holder_and_free_once_released(tmp_path):
    folder = tmp_path / "out"
    with output_lock(folder) as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["started"]
        refused = pytest.raises(FolderInUse, match=f"in use by another run \\(pid {os.getpid()}, `")
        with refused, output_lock(folder):
            pass
        assert json.loads(path.read_text()) == holder  # the refused caller wrote nothing
    assert (folder / LOCK_FILE).read_text() == ""
    with output_lock(folder):  # released: taken again at once
        pass


def test_the_lock_file_of_a_dead_process_does_not_block(tmp_path):
    folder = tmp_path / "out"
    code = (
        "import os, sys; from robustcompress.experiments.lock import output_lock\n"
        f"with output_lock({str(folder)!r}): os._exit(0)  # dies holding it, as SIGKILL would\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})
    dead = json.loads((folder / LOCK_FILE).read_text())
    assert dead["pid"] != os.getpid()
    with output_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
