"""Atomic writes: the finished file appears whole, an interrupted one leaves nothing behind."""

from __future__ import annotations

import json
import os
import stat

import pytest

from robustcompress.fileio import (
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


class Interrupted(Exception):
    pass


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_finished_file_appears_with_its_content_and_no_temporary_left(tmp_path):
    target = tmp_path / "sub" / "out.txt"  # the folder is created
    with atomic_write(target) as f:
        f.write("héllo\n")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_exception_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    fresh = tmp_path / "fresh.bin"
    with pytest.raises(Interrupted), atomic_write(fresh, "wb") as f:
        f.write(b"half")
        raise Interrupted
    assert list(tmp_path.iterdir()) == []

    old = atomic_write_text(tmp_path / "old.txt", "old")
    with pytest.raises(Interrupted), atomic_write(old) as f:
        f.write("new but unfinished")
        raise Interrupted
    assert old.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_permissions_are_those_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    written = atomic_write_bytes(tmp_path / "atomic", b"x", fsync=True)
    assert _mode(written) == _mode(plain)
    mask = os.umask(0o022)
    os.umask(mask)
    assert _mode(written) == 0o666 & ~mask  # not mkstemp's 0o600


def test_json_round_trip_with_default(tmp_path):
    obj = {"b": 1, "a": [1.5, None], "p": tmp_path}
    path = atomic_write_json(tmp_path / "m.json", obj, default=str)
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1, "p": str(tmp_path)}
    assert path.read_text() == json.dumps(obj, indent=2, sort_keys=True, default=str)


def test_atomic_path_keeps_the_suffix_for_writers_that_read_it(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_only_write_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="'a'"), atomic_write(tmp_path / "x", "a"):
        pass


def test_atomic_dir_swaps_in_a_whole_folder_or_keeps_the_old_one(tmp_path):
    folder = tmp_path / "ckpt"
    with atomic_dir(folder) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in folder.iterdir()] == ["a"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert _mode(folder) == 0o777 & ~mask  # not mkdtemp's 0o700

    with atomic_dir(folder) as tmp:  # replacing: the old content goes, no .old left behind
        (tmp / "b").write_text("2")
    assert [p.name for p in folder.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    with pytest.raises(Interrupted), atomic_dir(folder) as tmp:
        (tmp / "c").write_text("3")
        raise Interrupted
    assert [p.name for p in folder.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
