"""The small study config that runner and CLI tests share: cnn8 at a quarter width, one epoch."""

from __future__ import annotations

from pathlib import Path


def tiny_config(
    tmp_path: Path,
    data_root: Path,
    extra: str = "",
    *,
    name: str = "tiny",
    limit_train: int = 500,
    limit_test: int = 200,
) -> Path:
    """Write tmp_path/exp.toml (Fashion-MNIST, cnn8 x0.25, one epoch); `extra` continues its [train]
    table and may add recipes and evaluations."""
    path = tmp_path / "exp.toml"
    path.write_text(f"""
name = "{name}"
output = "{tmp_path / "out"}"
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = {limit_train}
limit_test = {limit_test}
[model]
name = "cnn8"
width = 0.25
[train]
epochs = 1
batch_size = 64
{extra}
""")
    return path
