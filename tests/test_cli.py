import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from robustcompress.cli import main


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_help_on_every_command():
    result = _run(["--help"])
    assert result.exit_code == 0
    commands = [line.split()[0] for line in result.output.split("Commands:")[1].strip().splitlines()]
    assert {"demo", "train", "evaluate", "run", "results"} <= set(commands)
    for command in commands:
        sub = _run([command, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output, command


def test_train_then_evaluate_json(data_root, tmp_path):
    out = tmp_path / "ck"
    args = [
        "train",
        "--model",
        "cnn8",
        "--width",
        "0.25",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        str(data_root),
        "--limit-train",
        "600",
        "--limit-test",
        "200",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--json",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "robustcompress.cli", *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)  # stdout holds only the JSON object; progress went to stderr
    assert 0.3 < metrics["acc.clean"] <= 1.0
    result = _run(["evaluate", str(out), "--data-root", str(data_root), "--limit-test", "200", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["acc.clean"] == pytest.approx(metrics["acc.clean"])


def test_missing_data_root_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustcompress.cli",
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--epochs",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nowhere does not exist" in result.stderr and "--download" in result.stderr


def test_missing_dataset_files_are_named(tmp_path):
    result = _run(["train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte.gz" in result.output and str(tmp_path / "fashion-mnist") in result.output


def test_truncated_dataset_file_exits_2(data_root, tmp_path):
    root = tmp_path / "data"
    (root / "fashion-mnist").mkdir(parents=True)
    for f in (data_root / "fashion-mnist").iterdir():
        data = f.read_bytes()
        (root / "fashion-mnist" / f.name).write_bytes(
            data[: len(data) // 2] if "train-images" in f.name else data
        )
    result = _run(["train", "--dataset", "fashion-mnist", "--data-root", str(root), "--epochs", "1"])
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte.gz" in result.output


def test_pickle_checkpoint_is_refused_by_the_cli(tmp_path):
    evil = tmp_path / "model.pt"
    evil.write_bytes(b"\x80\x04\x95not a checkpoint")
    result = _run(["evaluate", str(evil)])
    assert result.exit_code == 2 and "unpickling" in result.output


def test_run_config_with_unknown_key_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('name = "x"\n[train]\nepochs = 1\nlearning_rate = 0.1\n')
    result = _run(["run", str(cfg)])
    assert result.exit_code == 2
    assert "train.learning_rate" in result.output and "lr" in result.output


def test_demo_quick_runs_end_to_end(data_root, tmp_path):
    out = tmp_path / "demo"
    result = _run(["demo", "--quick", "--data-root", str(data_root), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert "baseline/baseline" in rows
    assert all(0 <= m["acc.clean"] <= 1 for m in rows.values())
    assert (out / "results.sqlite").is_file()
