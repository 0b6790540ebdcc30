"""One run per output folder: an exclusive flock on `<output>/run.lock` for as long as a run lasts.

Two runs on one folder would train the same artifacts twice and race on the results store. The
lock is the operating system's (fcntl.flock), so it ends with its process however that ends: a
killed run leaves the file behind but never a held lock, and the next run takes it. The holder
writes who it is into the file (pid, command, start time, host), which a refused run quotes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from robustcompress.errors import ConfigError

LOCK_FILE = "run.lock"


class FolderInUse(ConfigError):
    """Another live process runs into this output folder."""


@contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the output folder's lock while the block runs; FolderInUse (exit 2) naming the holder
    when a live process has it. Creates the folder if needed; a refused caller writes nothing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"the output folder {folder} is in use by another run ({_holder(path)}); wait for it to "
                "finish, stop it, or give this run another output folder (--out)"
            ) from None
        holder = {
            "pid": os.getpid(),
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": socket.gethostname(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # a file left behind names no one
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    """Who holds the lock, as its holder wrote it (it may not have written it yet)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "a process that has not yet said who it is"
    where = "" if info.get("host") == socket.gethostname() else f" on host {info.get('host')}"
    return f"pid {info.get('pid')}{where}, `{info.get('command')}`, started {info.get('started')}"
