"""Where datasets live: --data-root, else $ROBUSTCOMPRESS_DATA, else a per-user cache folder."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import platformdirs

from robustcompress.errors import DataError

ENV_VAR = "ROBUSTCOMPRESS_DATA"

HOW_TO_FIX = (
    "Point --data-root (or the ROBUSTCOMPRESS_DATA environment variable) at the folder that holds "
    "<dataset>/ sub-folders, or pass --download (download=True) to fetch the official files."
)


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $ROBUSTCOMPRESS_DATA, else <user cache>/robustcompress/data."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_cache_path("robustcompress") / "data"


def resolve_user_path(text: str, root: Path, what: str) -> Path:
    """A path given after `npz:` or `folder:`: absolute, else relative to the data root, else to the cwd."""
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [root / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    searched = " and ".join(str(c) for c in candidates)
    raise DataError(
        f"{what} {text!r} not found (looked for {searched}). Give an absolute path, or a path "
        "relative to the data root (--data-root / $ROBUSTCOMPRESS_DATA) or to the current folder."
    )


def missing_files_error(
    name: str, folder: Path, missing: Iterable[str], alternative: str = "", hint: str = ""
) -> DataError:
    """A DataError naming the dataset, the folder searched, each file expected there, and the fix."""
    files = ", ".join(missing)
    absent = folder
    while not absent.parent.exists() and absent.parent != absent:
        absent = absent.parent
    where = f"folder {folder}" if folder.is_dir() else f"folder {folder} ({absent} does not exist)"
    message = f"dataset {name!r}: missing {files} in {where}{alternative}. {HOW_TO_FIX}"
    return DataError(f"{message} {hint}" if hint else message)
