"""Opt-in download of the official files: checksum-verified, written atomically, unpacked safely.

The official addresses can be replaced by a mirror: set $ROBUSTCOMPRESS_MIRROR to a base URL under
which the files sit as <base>/<dataset>/<file> (file:// and http:// URLs work too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from robustcompress.data.checksums import OfficialFile
from robustcompress.data.root import missing_files_error
from robustcompress.errors import DataError
from robustcompress.fileio import atomic_write

MIRROR_ENV_VAR = "ROBUSTCOMPRESS_MIRROR"

OFFICIAL_URLS: dict[str, list[str]] = {
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/"],
}


def base_urls(name: str) -> list[str]:
    """Base URLs for dataset `name`: the mirror if $ROBUSTCOMPRESS_MIRROR is set, else the official ones."""
    mirror = os.environ.get(MIRROR_ENV_VAR)
    if mirror:
        return [mirror.rstrip("/") + f"/{name}/"]
    return OFFICIAL_URLS[name]


def download_file(urls: Sequence[str], dest: Path, expected: OfficialFile, timeout: float = 60.0) -> Path:
    """Fetch the first of `urls` whose bytes match `expected.md5` to `dest` (temp name, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        print(f"downloading {url} -> {dest}", file=sys.stderr)
        try:
            md5 = hashlib.md5()
            with atomic_write(dest, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    md5.update(chunk)
                    out.write(chunk)
                if md5.hexdigest() != expected.md5:  # raised inside the block: dest is not written
                    raise ValueError(f"md5 {md5.hexdigest()}, expected the official {expected.md5}")
            return dest
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
    raise DataError(
        f"could not download {dest.name}: " + "; ".join(failures) + f". Copy the official file into "
        f"{dest.parent} yourself, or set ${MIRROR_ENV_VAR} to a mirror holding <dataset>/{dest.name}."
    )


def ensure_files(
    name: str, folder: Path, files: Sequence[OfficialFile], download: bool, hint: str = ""
) -> None:
    """Make sure each of `files` is in `folder`: download the missing ones, or name them in a DataError."""
    missing = [spec for spec in files if not (folder / spec.name).is_file()]
    if not missing:
        return
    if not download:
        raise missing_files_error(name, folder, [spec.name for spec in missing], hint)
    for spec in missing:
        download_file([base + spec.name for base in base_urls(name)], folder / spec.name, spec)


def extract_tar(archive: Path, dest: Path, member_dir: str) -> Path:
    """Unpack `member_dir/` of a .tar.gz into `dest` safely (tarfile's "data" filter) and atomically per file.

    The archive is unpacked into a temporary folder beside `dest/member_dir`, then its files are renamed
    into place, so an interrupted extraction never leaves half-written files under their final names.
    """
    target = dest / member_dir
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:
            raise DataError(
                f"{archive} holds an unsafe member ({exc}); refusing to unpack it. Delete the archive "
                "and fetch the official one again."
            ) from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(
                f"{archive} is not a readable .tar.gz ({exc}); it is truncated or corrupt. Delete it and "
                "fetch the official one again (--download)."
            ) from None
        unpacked = tmp / member_dir
        if not unpacked.is_dir():
            raise DataError(
                f"{archive} has no {member_dir}/ folder; it is not the official archive. Delete it and "
                "fetch the official one again (--download)."
            )
        target.mkdir(parents=True, exist_ok=True)
        for item in unpacked.iterdir():
            if item.is_file():
                os.replace(item, target / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
