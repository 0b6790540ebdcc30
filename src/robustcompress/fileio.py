"""Atomic writes: a reader sees the old file (or none) or the finished new one, never a partial one.

Everything is written under a temporary name in the target's own folder (so the final rename stays
on one file system and is atomic), then renamed over the target; on an exception the temporary is
removed and the target is left as it was. Files get the permissions a plain `open(path, "w")`
would give (0o666 less the umask), not the 0o600 of `tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    """The process umask: from /proc where there is one, else by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import
_FILE_MODE = 0o666 & ~_UMASK  # what open(path, "w") gives
_DIR_MODE = 0o777 & ~_UMASK  # what mkdir gives


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def default_permissions(path: str | Path) -> Path:
    """Give a file another library wrote (safetensors writes 0o600) the mode `open` would give it."""
    os.chmod(path, _FILE_MODE)
    return Path(path)


@contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that wants a file name; renamed onto `path` after.

    The temporary name ends with `path`'s suffix, so writers that infer the format from the
    extension (matplotlib's savefig, safetensors) behave as with `path` itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


@contextmanager
def atomic_write(
    path: str | Path, mode: str = "w", *, encoding: str | None = None, fsync: bool = False
) -> Iterator[IO[Any]]:
    """Open `path` to write ("w": utf-8 text unless told, "wb": bytes); it appears when the block ends."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', not {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    with atomic_write(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    with atomic_write(path, "w", fsync=fsync) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(
    path: str | Path,
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = True,
    default: Callable[[Any], Any] | None = None,
    fsync: bool = False,
) -> Path:
    """Write `obj` as JSON (no trailing newline), atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text, fsync=fsync)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces the folder `path`.

    A folder cannot be renamed over a non-empty one, so an existing `path` is first moved aside to
    `.<name>.old` and removed after the swap: a reader sees the old folder or the new one, except
    for the instant between the two renames, when `path` is missing (never half-written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
