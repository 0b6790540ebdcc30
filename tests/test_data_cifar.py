"""CIFAR python batches: format, checksums, archive, download, and refusal of tampered pickles.

The official batches are not available offline, so most tests build small batches in the official
format (Python-2-style protocol-2 pickles of dicts with a uint8 (N, 3072) array) and register their
md5s in place of the official ones; one test shows that the official md5s refuse such files.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcompress.data import load_dataset
from robustcompress.data.checksums import OFFICIAL_ARCHIVES, OFFICIAL_FILES, OfficialFile
from robustcompress.data.safe_pickle import load_restricted_pickle
from robustcompress.errors import DataError


def py2_pickle(obj) -> bytes:
    """Pickle dicts, lists, str, int and uint8 arrays with the opcodes Python 2 + numpy wrote into the
    official CIFAR batches (protocol 2, byte strings as BINSTRING, numpy.core.multiarray._reconstruct)."""

    def string(text: str | bytes) -> bytes:
        raw = text.encode("latin1") if isinstance(text, str) else text
        if len(raw) < 256:
            return b"U" + bytes([len(raw)]) + raw
        return b"T" + struct.pack("<i", len(raw)) + raw

    def integer(value: int) -> bytes:
        if 0 <= value < 256:
            return b"K" + bytes([value])
        if 0 <= value < 65536:
            return b"M" + struct.pack("<H", value)
        return b"J" + struct.pack("<i", value)

    def encode(o) -> bytes:
        if isinstance(o, dict):
            return b"}(" + b"".join(encode(k) + encode(v) for k, v in o.items()) + b"u"
        if isinstance(o, list):
            return b"](" + b"".join(encode(v) for v in o) + b"e"
        if isinstance(o, str):
            return string(o)
        if isinstance(o, int):
            return integer(o)
        assert isinstance(o, np.ndarray) and o.dtype == np.uint8
        shape = b"(" + b"".join(integer(d) for d in o.shape) + b"t"
        dtype = b"cnumpy\ndtype\n" + string("u1") + b"K\x00K\x01\x87R"
        dtype += b"(K\x03" + string("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        header = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string("b") + b"\x87R"
        return header + b"(K\x01" + shape + dtype + b"\x89" + string(o.tobytes()) + b"tb"

    return b"\x80\x02" + encode(obj) + b"."


def write_cifar(
    folder: Path, name: str, rng: np.random.Generator, per_batch: int = 20
) -> dict[str, np.ndarray]:
    """Batches of the official layout in folder/<batch folder>; returns the arrays written."""
    if name == "cifar10":
        sub, train_files, test_files, meta_file = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "batches.meta",
        )
        labels_key, classes, meta = (
            "labels",
            10,
            {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072},
        )
    else:
        sub, train_files, test_files, meta_file = "cifar-100-python", ["train"], ["test"], "meta"
        labels_key, classes = "fine_labels", 100
        meta = {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        }
    batch_dir = folder / sub
    batch_dir.mkdir(parents=True)
    written: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for split, files in (("train", train_files), ("test", test_files)):
        for file in files:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, classes, per_batch)]
            batch = {
                "batch_label": file,
                labels_key: labels,
                "data": data,
                "filenames": [f"{i}.png" for i in labels],
            }
            (batch_dir / file).write_bytes(py2_pickle(batch))
            written[f"x_{split}"].append(data.reshape(-1, 3, 32, 32))
            written[f"y_{split}"].append(np.array(labels))
    (batch_dir / meta_file).write_bytes(py2_pickle(meta))
    return {key: np.concatenate(value) for key, value in written.items()}


def trust(monkeypatch, name: str, batch_dir: Path) -> None:
    """Register the md5s of the files in batch_dir in place of the official ones."""
    files = [
        OfficialFile(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(batch_dir.iterdir())
    ]
    monkeypatch.setitem(OFFICIAL_FILES, name, files)


def make_tarball(folder: Path, name: str, source: Path, monkeypatch) -> Path:
    archive = folder / OFFICIAL_ARCHIVES[name].name
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    monkeypatch.setitem(
        OFFICIAL_ARCHIVES, name, OfficialFile(archive.name, hashlib.md5(archive.read_bytes()).hexdigest())
    )
    return archive


def test_cifar10_batches(tmp_path, monkeypatch):
    written = write_cifar(tmp_path / "cifar10", "cifar10", np.random.default_rng(0))
    trust(monkeypatch, "cifar10", tmp_path / "cifar10" / "cifar-10-batches-py")
    s = load_dataset("cifar10", tmp_path, val_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (80, 20, 20)
    assert torch.equal(s.test.x, torch.from_numpy(written["x_test"]).float() / 255)
    assert torch.equal(s.test.y, torch.from_numpy(written["y_test"]))
    pool = torch.cat([s.train.x, s.val.x])
    assert torch.equal(
        torch.unique(pool.flatten(1), dim=0),
        torch.unique(torch.from_numpy(written["x_train"]).float().div(255).flatten(1), dim=0),
    )
    info = s.info
    assert info.image_shape == (3, 32, 32) and info.num_classes == 10 and info.class_names[3] == "class3"
    assert info.mean == [0.4914, 0.4822, 0.4465] and info.std == [0.2470, 0.2435, 0.2616]


def test_official_checksums_refuse_other_batches(tmp_path):
    write_cifar(tmp_path / "cifar10", "cifar10", np.random.default_rng(0))
    with pytest.raises(
        DataError, match=r"data_batch_1 is corrupt or truncated: md5 .* c99cafc152244af753f735de768cd75f"
    ):
        load_dataset("cifar10", tmp_path)


def test_cifar100_from_archive_and_download(tmp_path, monkeypatch):
    source = tmp_path / "source"
    written = write_cifar(source, "cifar100", np.random.default_rng(1), per_batch=50)
    trust(monkeypatch, "cifar100", source / "cifar-100-python")
    # 1. the released .tar.gz placed in <root>/cifar100/ is checked and unpacked
    root = tmp_path / "root"
    archive = make_tarball(root / "cifar100", "cifar100", source / "cifar-100-python", monkeypatch)
    s = load_dataset("cifar100", root, val_fraction=0.0)
    assert (len(s.train), len(s.test), s.info.num_classes) == (50, 50, 100)
    assert torch.equal(s.train.y, torch.from_numpy(written["y_train"]))
    assert sorted(p.name for p in (root / "cifar100").iterdir()) == sorted([archive.name, "cifar-100-python"])

    # 2. --download fetches the archive from a mirror (here a local http server) and unpacks it
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ROBUSTCOMPRESS_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        with pytest.raises(
            DataError, match="missing meta, test, train.*or the archive cifar-100-python.tar.gz"
        ):
            load_dataset("cifar100", fresh)
        s2 = load_dataset("cifar100", fresh, download=True, val_fraction=0.0)
        assert torch.equal(s2.test.x, s.test.x)
    finally:
        server.shutdown()
        server.server_close()


def test_tampered_batch_is_refused_and_never_runs(tmp_path, monkeypatch):
    write_cifar(tmp_path / "cifar10", "cifar10", np.random.default_rng(0))
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    batch_dir = tmp_path / "cifar10" / "cifar-10-batches-py"
    (batch_dir / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}, protocol=2))
    # official checksums stop it first ...
    with pytest.raises(DataError, match="data_batch_1 is corrupt"):
        load_dataset("cifar10", tmp_path)
    # ... and even when its md5 were trusted, the restricted unpickler refuses it
    trust(monkeypatch, "cifar10", batch_dir)
    with pytest.raises(DataError, match=r"data_batch_1: refusing to unpickle (posix|os)\.system"):
        load_dataset("cifar10", tmp_path)
    for evil in [(eval, ("1",)), (exec, (f"open({str(marker)!r}, 'w')",))]:
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(type("E", (), {"__reduce__": lambda self, e=evil: e})(), protocol=2))
        with pytest.raises(DataError, match=r"refusing to unpickle (__builtin__|builtins)\.(eval|exec)"):
            load_restricted_pickle(path)
    assert not marker.exists()


def test_truncated_or_foreign_batches(tmp_path):
    # a batch re-pickled by Python 3 (numpy._core names, bytes through _codecs.encode) reads too
    good = pickle.dumps(
        {"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072), "labels": [0, 1]}, protocol=2
    )
    loaded = load_restricted_pickle_bytes(tmp_path, good)
    assert loaded["labels"] == [0, 1] and np.array_equal(
        loaded["data"].ravel(), np.arange(6144, dtype=np.uint8)
    )
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_restricted_pickle_bytes(tmp_path, good[: len(good) // 2])
    # an array of another shape in a file that passes the (trusted) checksum is refused by content checks
    from robustcompress.data.cifar import read_batch

    path = tmp_path / "batch"
    path.write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataError, match=r"uint8 array of shape \(N, 3072\)"):
        read_batch(path, "labels", 10)
    path.write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(DataError, match="labels in 0..9"):
        read_batch(path, "labels", 10)


def load_restricted_pickle_bytes(tmp_path: Path, content: bytes):
    path = tmp_path / "pickle.bin"
    path.write_bytes(content)
    return load_restricted_pickle(path)


def test_cifar10_folder_with_only_the_subset_npz_points_to_it(data_root):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_root)
    message = str(err.value)
    assert "data_batch_1" in message and "cifar-10-python.tar.gz" in message
    assert "npz:cifar10/cifar10_exact_subset.npz" in message
    # and the suggestion works
    assert len(load_dataset("npz:cifar10/cifar10_exact_subset.npz", data_root, limit_test=10).test) == 10


def test_unsafe_archive_member_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setitem(
        OFFICIAL_ARCHIVES,
        "cifar10",
        OfficialFile(archive.name, hashlib.md5(archive.read_bytes()).hexdigest()),
    )
    with pytest.raises(DataError, match="unsafe member"):
        load_dataset("cifar10", tmp_path)
    assert not (tmp_path.parent / "outside").exists()
