"""Datasets: real Fashion-MNIST / MNIST / CIFAR-10-subset files, limits, splits, errors and download."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch

from robustcompress.data import DATASETS, ImageData, load_dataset, resolve_data_root
from robustcompress.data.checksums import OFFICIAL_FILES, OfficialFile
from robustcompress.data.download import download_file, extract_tar
from robustcompress.data.idx import read_idx
from robustcompress.data.splits import balanced_first, train_val_split
from robustcompress.errors import ConfigError, DataError

IDX_FILES = [spec.name for spec in OFFICIAL_FILES["mnist"]]


def _copy_idx(data_root: Path, name: str, dest_root: Path) -> Path:
    """Symlink the four official files of `name` into dest_root/name (so one can be replaced)."""
    folder = dest_root / name
    folder.mkdir(parents=True)
    for file in IDX_FILES:
        (folder / file).symlink_to(data_root / name / file)
    return folder


# ---------------------------------------------------------------- data root


def test_data_root_argument_then_environment_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTCOMPRESS_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("ROBUSTCOMPRESS_DATA")
    assert resolve_data_root() == platformdirs.user_cache_path("robustcompress") / "data"


def test_load_uses_environment_root(monkeypatch, data_root):
    monkeypatch.setenv("ROBUSTCOMPRESS_DATA", str(data_root))
    splits = load_dataset("mnist", limit_train=20, limit_test=10, val_fraction=0.5)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 10, 10)


# ---------------------------------------------------------------- real datasets


def test_fashion_mnist_limits_split_and_info(fmnist, data_root):
    s = fmnist  # conftest: limit_train=1100, val_fraction=100/1100, limit_test=500
    assert (len(s.train), len(s.val), len(s.test)) == (1000, 100, 500)
    for part in (s.train, s.val, s.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.shape[1:] == (1, 28, 28)
        # pixels are the uint8 grey levels / 255: whole levels, black and white both present
        grey = part.x * 255
        assert torch.allclose(grey, grey.round(), atol=1e-4)
        assert (float(part.x.min()), float(part.x.max())) == (0.0, 1.0)
    assert torch.bincount(s.val.y).tolist() == [10] * 10
    assert torch.bincount(s.test.y).tolist() == [50] * 10
    assert torch.bincount(s.train.y).tolist() == [100] * 10
    info = s.info
    assert (info.num_classes, info.in_channels, info.input_size) == (10, 1, 28)
    assert info.mean == [0.2860] and info.std == [0.3530]
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    # The test limit takes the first 50 images of each class, in file order.
    raw_x = read_idx(data_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")
    raw_y = read_idx(data_root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    first = np.sort(np.concatenate([np.flatnonzero(raw_y == c)[:50] for c in range(10)]))
    assert torch.equal(s.test.y, torch.from_numpy(raw_y[first].astype(np.int64)))
    assert torch.equal(s.test.x, torch.from_numpy(raw_x[first][:, None]).float() / 255)


def test_split_is_deterministic_disjoint_and_seeded(data_root):
    a = load_dataset("fashion-mnist", data_root, limit_train=300, limit_test=10, seed=1)
    b = load_dataset("fashion-mnist", data_root, limit_train=300, limit_test=10, seed=1)
    c = load_dataset("fashion-mnist", data_root, limit_train=300, limit_test=10, seed=2)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.x, c.val.x)
    assert (len(a.train), len(a.val)) == (270, 30)
    # train and val together are exactly the limited pool: no image lost or duplicated
    pool = torch.cat([a.train.x, a.val.x]).flatten(1)
    pool_c = torch.cat([c.train.x, c.val.x]).flatten(1)
    assert torch.unique(pool, dim=0).shape[0] == 300
    assert torch.equal(torch.unique(pool, dim=0), torch.unique(pool_c, dim=0))


def test_full_mnist_matches_published_counts(data_root):
    s = load_dataset("mnist", data_root)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert torch.bincount(s.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert s.info.mean == [0.1307] and s.info.std == [0.3081]
    assert abs(float(torch.cat([s.train.x, s.val.x]).mean()) - 0.1307) < 1e-3


def test_cifar10_subset_npz(data_root):
    s = load_dataset("npz:cifar10/cifar10_exact_subset.npz", data_root, limit_test=200)
    assert s.train.x.shape[1:] == (3, 32, 32) and len(s.test) == 200
    assert len(s.train) + len(s.val) == 8068
    assert s.info.class_names[:3] == ["airplane", "automobile", "bird"]
    assert s.info.num_classes == 10 and s.info.in_channels == 3
    # computed from the training images; shared/data/README.md gives the same figures
    assert np.allclose(s.info.mean, [0.4930, 0.4834, 0.4469], atol=1e-4)
    assert np.allclose(s.info.std, [0.2480, 0.2445, 0.2624], atol=1e-4)


def test_npz_grayscale_absolute_and_relative_paths(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (40, 8, 6), dtype=np.uint8)
    y_train = np.arange(40) % 4
    np.savez(tmp_path / "tiny.npz", x_train=x_train, y_train=y_train, x_test=x_train[:8], y_test=y_train[:8])
    s = load_dataset(f"npz:{tmp_path / 'tiny.npz'}", tmp_path / "elsewhere", val_fraction=0.25)
    assert (
        s.info.image_shape == (1, 8, 6)
        and s.info.num_classes == 4
        and s.info.class_names == ["0", "1", "2", "3"]
    )
    assert s.info.mean == pytest.approx([x_train.mean() / 255])
    assert s.info.std == pytest.approx([(x_train / 255).std()])
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 8)
    assert torch.equal(s.test.x[:, 0], torch.from_numpy(x_train[:8]).float() / 255)
    assert len(load_dataset("npz:tiny.npz", tmp_path).test) == 8  # relative to the data root
    monkeypatch.chdir(tmp_path)
    assert len(load_dataset("npz:tiny.npz", tmp_path / "elsewhere").test) == 8  # relative to the cwd


# ---------------------------------------------------------------- errors


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError, match="fashion-mnist.*mnist.*npz"):
        load_dataset("imagenet")
    assert {"fashion-mnist", "mnist", "npz"} <= set(DATASETS.names())


def test_missing_root_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'} does not exist") as err:
        load_dataset("mnist", tmp_path / "nowhere")
    for text in ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "--data-root", "--download"]:
        assert text in str(err.value)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)
    message = str(err.value)
    for name in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        assert name in message
    assert str(tmp_path / "mnist") in message and "ROBUSTCOMPRESS_DATA" in message and "--download" in message


def test_truncated_file_is_named(tmp_path, data_root):
    folder = _copy_idx(data_root, "fashion-mnist", tmp_path)
    labels = folder / "train-labels-idx1-ubyte.gz"
    content = labels.read_bytes()
    labels.unlink()
    labels.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated") as err:
        load_dataset("fashion-mnist", tmp_path, limit_train=10)
    assert str(labels) in str(err.value) and "25c81989df183df01b3e8a0aad5dffbe" in str(err.value)


def test_recompressed_copy_with_identical_content_is_accepted(tmp_path, data_root):
    folder = _copy_idx(data_root, "mnist", tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    content = gzip.decompress(labels.read_bytes())
    labels.unlink()
    labels.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))  # other header, other md5
    s = load_dataset("mnist", tmp_path, limit_train=10, limit_test=10)
    assert len(s.test) == 10
    # the same size but one changed label byte is refused
    labels.write_bytes(gzip.compress(content[:-1] + bytes([(content[-1] + 1) % 10]), mtime=0))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path, limit_train=10)


def test_bad_npz_files(tmp_path):
    good = io.BytesIO()
    np.savez(
        good,
        x_train=np.zeros((4, 5, 5), np.uint8),
        y_train=np.zeros(4, np.int64),
        x_test=np.zeros((2, 5, 5), np.uint8),
        y_test=np.zeros(2, np.int64),
    )
    (tmp_path / "cut.npz").write_bytes(good.getvalue()[:200])
    with pytest.raises(DataError, match="cut.npz.*truncated or corrupt"):
        load_dataset("npz:cut.npz", tmp_path)
    np.savez(tmp_path / "keys.npz", x_train=np.zeros((4, 5, 5), np.uint8))
    with pytest.raises(DataError, match="lacks the key.*y_train"):
        load_dataset("npz:keys.npz", tmp_path)
    np.savez(
        tmp_path / "float.npz",
        x_train=np.zeros((4, 5, 5)),
        y_train=np.zeros(4, np.int64),
        x_test=np.zeros((2, 5, 5)),
        y_test=np.zeros(2, np.int64),
    )
    with pytest.raises(DataError, match="uint8"):
        load_dataset("npz:float.npz", tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz:absent.npz", tmp_path)


def test_bad_arguments(data_root):
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("mnist", data_root, val_fraction=1.0)
    with pytest.raises(ConfigError, match="limit_train"):
        load_dataset("mnist", data_root, limit_train=0)


# ---------------------------------------------------------------- selection logic


def test_balanced_first_is_round_robin_in_file_order():
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 0, 2])
    assert balanced_first(labels, 3).tolist() == [0, 4, 5]
    assert balanced_first(labels, 6).tolist() == [0, 1, 2, 4, 5, 6]  # class 1 runs out, others go on
    assert balanced_first(labels, 7).tolist() == [0, 1, 2, 4, 5, 6, 8]
    assert balanced_first(labels, 100).tolist() == list(range(9))


def test_train_val_split_is_balanced_and_partitions():
    labels = np.repeat(np.arange(5), 20)
    train, val = train_val_split(labels, 0.2, seed=3)
    assert np.bincount(labels[val]).tolist() == [4] * 5
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert train_val_split(labels, 0.0, seed=3)[1].size == 0


# ---------------------------------------------------------------- ImageData


def test_image_data_batches_subset_and_device():
    data = ImageData(torch.rand(10, 1, 2, 2), torch.arange(10))
    assert len(data) == 10 and data.to("cpu") is data
    ordered = list(data.batches(4))
    assert [len(y) for _, y in ordered] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in ordered]), torch.arange(10))
    run = [
        torch.cat([y for _, y in data.batches(3, shuffle=True, generator=torch.Generator().manual_seed(5))])
        for _ in range(2)
    ]
    assert torch.equal(run[0], run[1]) and sorted(run[0].tolist()) == list(range(10))
    assert not torch.equal(run[0], torch.arange(10))
    part = data.subset([7, 2])
    assert part.y.tolist() == [7, 2] and torch.equal(part.x[0], data.x[7])
    with pytest.raises(ValueError):
        ImageData(torch.rand(3, 2, 2), torch.arange(3))


# ---------------------------------------------------------------- download


@pytest.fixture
def http_server():
    """Serve a folder over http://127.0.0.1 (as a dataset mirror would)."""
    servers = []

    def serve(folder: Path) -> str:
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_from_mirror_verifies_and_loads(tmp_path, data_root, http_server, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "mnist", mirror / "mnist")
    monkeypatch.setenv("ROBUSTCOMPRESS_MIRROR", http_server(mirror))
    root = tmp_path / "root"
    s = load_dataset("mnist", root, download=True, limit_train=20, limit_test=20)
    assert len(s.test) == 20
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(IDX_FILES)  # no temp files left
    # a mirror serving a corrupt file: refused, nothing written under the official name
    labels = mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:1000])
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="could not download t10k-labels-idx1-ubyte.gz.*md5"):
        load_dataset("mnist", root, download=True)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(set(IDX_FILES) - {labels.name})


def test_download_file_tries_next_url_and_writes_atomically(tmp_path):
    payload = b"official bytes" * 1000
    (tmp_path / "good.bin").write_bytes(payload)
    (tmp_path / "bad.bin").write_bytes(payload[:-1])
    spec = OfficialFile("file.bin", hashlib.md5(payload).hexdigest())
    dest = tmp_path / "out" / "file.bin"
    urls = [
        (tmp_path / "absent.bin").as_uri(),
        (tmp_path / "bad.bin").as_uri(),
        (tmp_path / "good.bin").as_uri(),
    ]
    assert download_file(urls, dest, spec) == dest and dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]
    with pytest.raises(DataError, match="absent.bin.*bad.bin: md5"):
        download_file(urls[:2], tmp_path / "out" / "other.bin", spec)
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_extract_tar_unpacks_the_member_folder(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"pkg/one": b"1", "pkg/two": b"22", "other/x": b"x"})
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_tar(archive, dest, "pkg") == dest / "pkg"
    assert (dest / "pkg" / "two").read_bytes() == b"22"
    assert sorted(p.name for p in dest.iterdir()) == ["pkg"]  # temp folder removed, other/ not kept


def test_extract_tar_refuses_unsafe_members(tmp_path):
    archive = _tar(tmp_path / "evil.tar.gz", {"pkg/ok": b"1", "../escaped": b"boom"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="unsafe member"):
        extract_tar(archive, dest, "pkg")
    assert not (tmp_path / "escaped").exists() and list(dest.iterdir()) == []
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[:30])
    with pytest.raises(DataError, match="truncated or corrupt"):
        extract_tar(tmp_path / "cut.tar.gz", dest, "pkg")
