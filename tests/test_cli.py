import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from robustcompress.cli import main
from tests.tiny_study import tiny_config


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


PRUNED_RECIPE = """
[[recipes]]
name = "pruned"
stages = [{type = "prune", amount = 0.5}, {type = "finetune", epochs = 1}]
"""


def test_run_dry_run_prints_the_plan_and_computes_nothing(tmp_path, data_root):
    from robustcompress.experiments.config import load_config
    from robustcompress.experiments.runner import plan

    path = tiny_config(tmp_path, data_root, PRUNED_RECIPE)
    result = _run(["run", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == {"experiments": [p.to_dict() for p in plan(load_config(path))]}
    [exp] = shown["experiments"]
    assert exp["name"] == "tiny/pruned"
    assert [(a["label"], a["stage"], a["cached"]) for a in exp["artifacts"]] == [
        ("baseline", "baseline", False),
        ("stage0:prune", "prune", False),
        ("final", "finetune", False),
    ]
    assert not (tmp_path / "out").exists()
    text = _run(["run", str(path), "--dry-run"])
    assert text.exit_code == 0
    for artifact in exp["artifacts"]:
        assert artifact["key"] in text.output
    assert "to train" in text.output and "to run" in text.output


def test_run_refuses_a_config_that_names_nothing_to_run(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    for args in (["run", str(empty)], ["run", str(empty), "--dry-run"]):
        result = _run(args)
        assert result.exit_code == 2
        assert '[data] dataset = "..."' in result.output and '[model] name = "..."' in result.output
    only_data = tmp_path / "data.toml"
    only_data.write_text('[data]\ndataset = "mnist"\n')
    result = _run(["run", str(only_data)])
    assert result.exit_code == 2 and "[model] name" in result.output and "[data]" not in result.output


def _store(folder):
    from robustcompress.experiments.store import ResultsStore

    store = ResultsStore(folder / "results.sqlite")
    store.add_metrics("e", "baseline", "a0", "k0", {"acc.clean": 0.75, "acc.pgd_linf_0.1": 0.25})
    return store


def test_results_metrics_are_checked_and_patterns_select(tmp_path):
    _store(tmp_path / "study")
    bogus = _run(["results", str(tmp_path / "study"), "--metrics", "acc.clean,bogus"])
    assert bogus.exit_code == 2
    assert "bogus" in bogus.output and "acc.clean, acc.pgd_linf_0.1" in bogus.output
    chosen = _run(["results", str(tmp_path / "study"), "--metrics", "acc.pgd*", "--json"])
    assert chosen.exit_code == 0
    assert json.loads(chosen.stdout) == {"e|baseline": {"acc.pgd_linf_0.1": 0.25}}
    # a folder of output folders names the ones it holds
    parent = _run(["results", str(tmp_path)])
    assert parent.exit_code == 2 and str(tmp_path / "study") in parent.output


def test_readme_results_command_reads_the_folder_the_readme_run_writes():
    """The README's quick-start `results` line must name the output of its `run` line."""
    from pathlib import Path

    from robustcompress.experiments.config import load_config

    repo = Path(__file__).parents[1]
    lines = [line.split("#")[0].split() for line in (repo / "README.md").read_text().splitlines()]
    runs = [words[2] for words in lines if words[:2] == ["robustcompress", "run"]]
    shown = [words[2] for words in lines if words[:2] == ["robustcompress", "results"]]
    assert runs and shown
    outputs = {load_config(repo / config).output for config in runs}
    assert set(shown) <= outputs


def test_train_refuses_to_overwrite_a_checkpoint_without_resume_or_overwrite(tmp_path, data_root):
    out = tmp_path / "ck"
    out.mkdir()
    (out / "meta.json").write_text("{}")
    args = ["train", "--width", "0.25", "--data-root", str(data_root), "--limit-train", "110"]
    args += ["--limit-test", "50", "--epochs", "1", "--out", str(out)]
    refused = _run(args)
    assert refused.exit_code == 2
    assert "--resume" in refused.output and "--overwrite" in refused.output
    assert (out / "meta.json").read_text() == "{}"  # untouched
    assert _run([*args, "--resume", "--overwrite"]).exit_code == 2
    replaced = _run([*args, "--overwrite", "--json"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "meta.json").read_text())["model"]["name"] == "cnn8"


def test_command_choices_are_the_registries():
    from robustcompress.attacks import ATTACKS
    from robustcompress.attacks import SUITES as ATTACK_SUITES
    from robustcompress.compression.presets import PRESETS
    from robustcompress.corruptions import SUITES
    from robustcompress.data import DATASETS
    from robustcompress.models import MODELS
    from robustcompress.stages import STAGES
    from robustcompress.training import OBJECTIVES

    def choices(command, option):
        [param] = [p for p in main.commands[command].params if p.name == option]
        return list(param.type.choices)

    assert choices("compress", "preset") == sorted(PRESETS)
    assert choices("compress", "objective") == OBJECTIVES.names() == choices("train", "objective")
    prune_methods = STAGES.get("prune").config_cls.model_fields["method"].annotation.__args__
    assert choices("compress", "prune") == list(prune_methods)
    assert choices("corrupt", "suite") == SUITES.names() == choices("evaluate", "corruptions")
    for command, names in [
        ("attack", [*ATTACKS.names(), *ATTACK_SUITES]),
        ("evaluate", [*ATTACKS.names(), *ATTACK_SUITES, *DATASETS.names()]),
        ("train", [*MODELS.names(), *DATASETS.names()]),
    ]:
        help_text = " ".join(_run([command, "--help"]).output.split())
        assert all(name in help_text for name in names), command
    wrong = _run(["compress", "ck", "--objective", "bogus", "--out", "x"])
    assert wrong.exit_code == 2 and all(f"'{name}'" in wrong.output for name in OBJECTIVES.names())


def test_every_help_ends_with_examples_and_names_only_docs_that_exist():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    commands = [
        line.split()[0] for line in _run(["--help"]).output.split("Commands:")[1].strip().splitlines()
    ]
    for command in commands:
        text = _run([command, "--help"]).output
        assert "Examples:" in text, command
        tail = text.rsplit("Examples:", 1)[1].strip().splitlines()
        calls = [line.strip() for line in tail if line.strip().startswith("robustcompress ")]
        assert 2 <= len(calls) <= 3, command
        assert all(c.startswith(f"robustcompress {command} ") for c in calls), command
        # every other line of the tail continues an example (after a trailing backslash)
        assert len(tail) == len(calls) + sum(line.rstrip().endswith("\\") for line in tail), command
        for doc in re.findall(r"docs/[\w./-]*\w", text.replace("\n", " ")):
            assert (repo / doc).exists(), f"{command} --help names {doc}, which does not exist"


@pytest.mark.parametrize("command", ["attack", "evaluate"])
@pytest.mark.parametrize(
    ("norm", "eps", "refused"),
    [("linf", "2", "exceeds"), ("linf", "0", "eps > 0"), ("l2", "-1", "eps > 0"), ("l2", "2", None)],
)
def test_eps_outside_the_pixel_range_is_refused(tmp_path, command, norm, eps, refused):
    missing = str(tmp_path / "no-checkpoint")
    option = "--attack" if command == "attack" else "--attacks"
    result = _run([command, missing, option, "pgd", "--norm", norm, "--eps", eps])
    assert result.exit_code == 2
    if refused:
        assert refused in result.output and "Traceback" not in result.output
    else:  # an L2 budget of 2 is valid: the command goes on and fails only at the missing checkpoint
        assert "no-checkpoint does not exist" in result.output


def test_compress_preset_epochs_json_reports_what_changed(trained_cnn8, tmp_path, data_root):
    from robustcompress.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "base", trained_cnn8[0], {"data": {"dataset": "fashion-mnist"}})
    args = ["compress", str(tmp_path / "base"), "--preset", "pcqat-int8", "--epochs", "1", "--amount", "0.6"]
    args += ["--data-root", str(data_root), "--limit-train", "200", "--limit-test", "100", "--json"]
    result = _run([*args, "--out", str(tmp_path / "small")])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    for key in ("acc.clean", "params", "params.nonzero", "macs", "macs.nonzero", "size.bytes"):
        assert key in m and f"{key}.before" in m, key
    assert m["macs"] == m["macs.before"]  # unstructured pruning and int8 keep the graph
    assert m["params.nonzero"] < 0.5 * m["params.nonzero.before"]  # 60% of the weights pruned
    assert m["size.bytes"] * 3 < m["size.bytes.before"]  # int8 weights, half of them zero-coded
    assert (tmp_path / "small" / "model.safetensors").stat().st_size == m["size.bytes"]
    recipe = json.loads((tmp_path / "small" / "meta.json").read_text())["recipe"]
    assert recipe == [{"type": "preset", "name": "pcqat-int8", "epochs": 1, "amount": 0.6}]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "qat", "--clusters", "8"], "nothing that --clusters changes"),
        (["--prune", "global", "--amount", "0.5", "--epochs", "1"], "--finetune-epochs"),
        (["--preset", "qat", "--int8"], "drop --preset"),
    ],
)
def test_compress_preset_option_misuse_exits_2(tmp_path, extra, message):
    result = _run(["compress", str(tmp_path / "ck"), *extra, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.output


def test_key_value_options_read_fractions_as_numbers_and_paths_as_text():
    from robustcompress.cli.common import parse_params

    got = parse_params(["eps=8/255", "steps=10", "checkpoint=runs/base", "name=plain", "flag=true"])
    assert got == {"eps": 8 / 255, "steps": 10, "checkpoint": "runs/base", "name": "plain", "flag": True}
