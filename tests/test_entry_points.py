"""Every public entry point works in a fresh Python process with only its own import.

Registrations (stages, evaluations, attacks, objectives, checkpoint structures ...) must come from
the library itself, not from whatever the caller happened to import first. Each test runs a short
script in a new interpreter whose only robustcompress import is the entry point under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from robustcompress.attacks import ATTACKS
from robustcompress.checkpoint import STRUCTURES, save_checkpoint, structure_of
from robustcompress.data import load_dataset
from robustcompress.evaluation import EVALUATIONS
from robustcompress.experiments.pipeline import apply_stages, parse_stages
from robustcompress.models import ModelSpec
from robustcompress.stages import STAGES, StageContext
from robustcompress.training import OBJECTIVES, TrainConfig

SRC = Path(__file__).resolve().parents[1] / "src"

# checkpoint kind -> (recipe, the structure entry its checkpoint must replay)
KINDS = {
    "pruned": ([{"type": "prune", "method": "global", "amount": 0.5}], "prune_masks"),
    "channel-pruned": ([{"type": "prune", "method": "channel", "amount": 0.5}], "channel_pruned"),
    "clustered": ([{"type": "cluster", "clusters": 4, "finetune_epochs": 0}], "clustered"),
    "fake-quantized": ([{"type": "qat", "bits": 8, "epochs": 0}], "fake_quant"),
    "int8": ([{"type": "int8"}], "int8"),
}


def fresh(script: str, timeout: int = 300) -> str:
    """Run `script` in a new interpreter (this checkout's sources first); returns its stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_data(data_root):
    return load_dataset(
        "fashion-mnist", root=data_root, limit_train=220, val_fraction=20 / 220, limit_test=64, seed=0
    )


@pytest.fixture(scope="module")
def checkpoints(tiny_data, tmp_path_factory):
    """{kind: folder} of compressed checkpoints of a small cnn8, and the logits each must give."""
    root = tmp_path_factory.mktemp("kinds")
    model = ModelSpec.for_data("cnn8", tiny_data.info, width=0.25).build(seed=0)
    ctx = StageContext(
        data=tiny_data,
        device=torch.device("cpu"),
        seed=0,
        train=TrainConfig(epochs=1, batch_size=32),
        parent=model,
        progress=False,
    )
    x = tiny_data.test.x[:16]
    torch.save(x, root / "x.pt")
    expected = {}
    for kind, (recipe, structure) in KINDS.items():
        compressed = apply_stages(model, parse_stages(recipe), ctx)[-1].model.eval()
        assert structure in [s["kind"] for s in structure_of(compressed)]
        save_checkpoint(root / kind, compressed, {"data": {"dataset": "fashion-mnist"}})
        with torch.no_grad():
            expected[kind] = compressed(x)
        torch.save(expected[kind], root / f"{kind}.logits.pt")
    return root


def test_load_checkpoint_of_every_compressed_kind_alone(checkpoints):
    out = fresh(f"""
        import json, sys
        from robustcompress.checkpoint import load_checkpoint

        import torch
        root = {str(checkpoints)!r}
        x = torch.load(root + "/x.pt", weights_only=True)
        report = {{}}
        for kind in {list(KINDS)!r}:
            model, meta = load_checkpoint(root + "/" + kind)
            with torch.no_grad():
                logits = model.eval()(x)
            expected = torch.load(root + "/" + kind + ".logits.pt", weights_only=True)
            report[kind] = {{
                "structure": [s["kind"] for s in meta["structure"]],
                "max_diff": (logits - expected).abs().max().item(),
            }}
        print(json.dumps(report))
    """)
    report = json.loads(out)
    for kind, (_, structure) in KINDS.items():
        assert structure in report[kind]["structure"], kind
        assert report[kind]["max_diff"] <= 1e-5, kind  # the same model, not merely a loadable one


def _builtin_names() -> dict[str, list[str]]:
    """The stages and evaluations a fresh process knows: test plug-ins that other tests loaded
    into this process (tests/plugins) are not built in."""
    return json.loads(
        fresh("""
        import json
        from robustcompress.evaluation.registry import EVALUATIONS
        from robustcompress.stages import STAGES

        print(json.dumps({"stages": STAGES.names(), "evaluations": EVALUATIONS.names()}))
    """)
    )


def _every_stage_and_evaluation_config(tmp_path, names: dict[str, list[str]]) -> Path:
    stages = ",\n    ".join(f'{{type = "{name}"}}' for name in names["stages"])
    evaluations = "\n".join(f'[[evaluations]]\ntype = "{name}"\n' for name in names["evaluations"])
    path = tmp_path / "every.toml"
    path.write_text(
        f'name = "every"\nstages = [\n    {stages},\n    {{type = "preset", name = "pcqat-int8"}},\n]\n'
        f'[data]\ndataset = "fashion-mnist"\n[model]\nname = "cnn8"\n\n{evaluations}'
    )
    return path


def test_load_config_with_every_stage_and_evaluation_alone(tmp_path):
    names = _builtin_names()
    assert set(names["stages"]) <= set(STAGES.names()) and set(names["evaluations"]) <= set(
        EVALUATIONS.names()
    )
    path = _every_stage_and_evaluation_config(tmp_path, names)
    out = fresh(f"""
        import json
        from robustcompress.experiments.config import load_config

        cfg = load_config({str(path)!r})
        print(json.dumps({{
            "stages": [name for name, _ in cfg.validated_stages()],
            "evaluations": [name for name, _ in cfg.validated_evaluations()],
        }}))
    """)
    got = json.loads(out)
    n = len(names["stages"])
    assert got["stages"][:n] == names["stages"]
    assert got["stages"][n:] == ["prune", "finetune", "cluster", "qat", "int8"]
    assert got["evaluations"] == names["evaluations"]


def test_run_experiments_alone(tmp_path, data_root):
    path = tmp_path / "tiny.toml"
    path.write_text(f"""
name = "tiny"
output = "{tmp_path / "out"}"
[data]
dataset = "fashion-mnist"
root = "{data_root}"
limit_train = 220
val_fraction = 0.1
limit_test = 64
[model]
name = "cnn8"
width = 0.25
[train]
epochs = 1
batch_size = 32
[[recipes]]
name = "pruned"
stages = [{{type = "prune", method = "global", amount = 0.5}}]
""")
    out = fresh(f"""
        import json
        from robustcompress.experiments.runner import run_experiments
        from robustcompress.experiments.config import load_config

        [result] = run_experiments(load_config({str(path)!r}), progress=False, log=lambda m: None)
        print(json.dumps(result.metrics))
    """)
    metrics = json.loads(out)
    assert set(metrics) == {"baseline", "final"}
    saved = json.loads((tmp_path / "out" / "tiny_pruned" / "metrics.json").read_text())
    assert saved["models"] == metrics


def test_make_attack_alone():
    out = fresh("""
        import json
        from robustcompress.attacks.base import make_attack

        import torch
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
        x_adv = make_attack("apgd-ce", model, 0.05, steps=5)(x, y)
        print(json.dumps({"linf": (x_adv - x).abs().max().item(), "min": x_adv.min().item(),
                          "max": x_adv.max().item()}))
    """)
    got = json.loads(out)
    assert got["linf"] == pytest.approx(0.05, abs=1e-6)  # steps reach the budget's edge, never past it
    assert got["min"] >= 0.0 and got["max"] <= 1.0


def test_lowest_module_alone_fills_every_registry():
    """`robustcompress.registry` imports nothing that registers; the package does it for it."""
    registries = {
        "STAGES": ("robustcompress.stages", STAGES),
        "EVALUATIONS": ("robustcompress.evaluation.registry", EVALUATIONS),
        "ATTACKS": ("robustcompress.attacks.base", ATTACKS),
        "OBJECTIVES": ("robustcompress.training.objectives", OBJECTIVES),
        "STRUCTURES": ("robustcompress.checkpoint", STRUCTURES),
    }
    where = {name: module for name, (module, _) in registries.items()}

    def names_after(import_line: str) -> dict[str, list[str]]:
        return json.loads(
            fresh(f"""
            import json, sys
            {import_line}

            where = {where!r}
            print(json.dumps({{n: getattr(sys.modules[m], n).names() for n, m in where.items()}}))
        """)
        )

    got = names_after("import robustcompress.registry")
    # the CLI imports every area it serves; the lowest module alone must know the same names
    # (compared across fresh processes: this process also holds names that tests registered)
    assert got == names_after("import robustcompress.cli")
    assert {"prune", "finetune", "cluster", "ptq", "qat", "int8"} <= set(got["STAGES"])
    assert {"clean", "adversarial", "corruption", "efficiency", "size"} <= set(got["EVALUATIONS"])
    assert {"prune_masks", "channel_pruned", "clustered", "fake_quant", "int8"} <= set(got["STRUCTURES"])


def test_the_one_call_api_alone(tmp_path, data_root):
    """`import robustcompress` is all a notebook needs: compress, evaluate and export a plain module."""
    out = fresh(f"""
        import json
        import torch
        import robustcompress as rc

        data = rc.load_dataset("fashion-mnist", root="{data_root}", limit_train=220, limit_test=64)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        recipe = [{{"type": "prune", "method": "global", "amount": 0.5}}]
        model, metrics = rc.compress(net, data, recipe=recipe)
        evaluated = rc.evaluate(model, data)
        report = rc.export(model, "{tmp_path / "net.onnx"}", format="onnx", calibration=data)
        print(json.dumps({{"metrics": metrics, "evaluated": evaluated, "parity": report["parity_ok"]}}))
    """)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["metrics"]["params.nonzero"] < got["metrics"]["params.nonzero.before"]
    assert got["evaluated"]["acc.clean"] == got["metrics"]["acc.clean"]
    assert got["parity"] is True


def test_python_dash_m_runs_the_cli():
    """`python -m robustcompress` is the same CLI as the installed command (for torchrun and clusters)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "robustcompress", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "run" in out.stdout
