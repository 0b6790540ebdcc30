"""Official checksums of the published dataset files, and their verification."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from robustcompress.errors import DataError


@dataclass(frozen=True)
class OfficialFile:
    """One published file: its md5 (as its authors list it) and, for .gz files, the sha256 of its content.

    `content_sha256` lets a re-compressed copy with identical content pass (Debian's
    dataset-fashion-mnist package, for example, rewrites the gzip headers).
    """

    name: str
    md5: str
    size: int | None = None
    content_sha256: str | None = None


def _idx(name: str, md5: str, size: int, content_sha256: str) -> OfficialFile:
    return OfficialFile(name, md5, size, content_sha256)


OFFICIAL_FILES: dict[str, list[OfficialFile]] = {
    # zalandoresearch/fashion-mnist README (md5); content sha256 of the decompressed idx files.
    "fashion-mnist": [
        _idx(
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            26421880,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        _idx(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            29515,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        _idx(
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            4422102,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        _idx(
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            5148,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ],
    # The well-known MNIST md5s (torchvision's list).
    "mnist": [
        _idx(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            9912422,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        _idx(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            28881,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        _idx(
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            1648877,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        _idx(
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            4542,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ],
    # https://www.cs.toronto.edu/~kriz/cifar.html (tarball md5) and the batch md5s torchvision checks.
    "cifar10": [
        OfficialFile("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        OfficialFile("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        OfficialFile("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        OfficialFile("data_batch_4", "634d18415352ddfa80567beed471001a"),
        OfficialFile("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        OfficialFile("test_batch", "40351d587109b95175f43aff81a1287e"),
        OfficialFile("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    ],
    "cifar100": [
        OfficialFile("train", "16019d7e3df5f24257cddd939b257f8d"),
        OfficialFile("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
        OfficialFile("meta", "7973b15100ade9c7d40fb424638fde48"),
    ],
}

OFFICIAL_ARCHIVES: dict[str, OfficialFile] = {
    "cifar10": OfficialFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071),
    "cifar100": OfficialFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437),
}


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gunzip_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def verify_file(path: Path, expected: OfficialFile, fix: str) -> None:
    """Raise a DataError naming `path` when its md5 (or .gz content) differs from the official one."""
    actual = file_digest(path, "md5")
    if actual == expected.md5:
        return
    if expected.content_sha256 is not None and _gunzip_sha256(path) == expected.content_sha256:
        return
    size = path.stat().st_size
    size_note = ""
    if expected.size is not None and size != expected.size:
        size_note = f", {size} bytes instead of {expected.size}" + (
            " (truncated)" if size < expected.size else ""
        )
    raise DataError(
        f"{path} is corrupt or truncated: md5 {actual}, expected the official {expected.md5}{size_note}. "
        f"{fix}"
    )
