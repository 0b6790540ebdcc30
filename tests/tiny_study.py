"""The small study config that runner and CLI tests share: cnn8 at a quarter width, one epoch."""

from __future__ import annotations

from pathlib import Path


def tiny_config(tmp_path: Path, data_root: Path, extra: str = "") -> Path:
    """Write tmp_path/exp.toml (500 training / 200 test Fashion-MNIST images) with `extra` appended."""
    path = tmp_path / "exp.toml"
    path.write_text(f"""
name = "tiny"
output = "{tmp_path / "out"}"
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = 500
limit_test = 200
[model]
name = "cnn8"
width = 0.25
[train]
epochs = 1
batch_size = 64
{extra}
""")
    return path
