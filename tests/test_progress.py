"""Progress off a terminal: plain lines, no carriage-return redraws."""

import io
import subprocess
import sys

from robustcompress.progress import LineProgress, progress_bar


def test_training_into_a_pipe_writes_plain_lines(data_root, tmp_path):
    args = ["train", "--model", "cnn8", "--width", "0.25", "--dataset", "fashion-mnist"]
    args += ["--data-root", str(data_root), "--limit-train", "1100", "--limit-test", "100"]
    args += ["--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "ck")]
    result = subprocess.run(
        [sys.executable, "-m", "robustcompress", "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    # 2 epochs of ~124 steps: one summary line per epoch, a line per 10 s at most, a few notes
    assert [line.startswith("epoch 1:") for line in lines].count(True) == 1
    assert [line.startswith("epoch 2:") for line in lines].count(True) == 1
    assert len(lines) < 15, result.stderr


def test_line_progress_writes_at_most_once_per_interval():
    out = io.StringIO()
    bar = progress_bar(1000, "epoch 1/1", unit="step", file=out, interval=3600)
    assert isinstance(bar, LineProgress)  # a StringIO is no terminal
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""
    out = io.StringIO()
    bar = progress_bar(10, "epoch 1/1", unit="step", file=out, interval=0)
    bar.set_postfix(loss="0.5")
    for _ in range(10):
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9  # every step but the last (the caller's summary ends the epoch)
    assert lines[0].startswith("epoch 1/1: 1/10 step (10%) loss=0.5, ")


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    bar = progress_bar(5, "x", enabled=False, file=out)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""
