"""Reading trained weights from outside robustcompress, safely, and fitting them to a model.

A weights file is safetensors or a PyTorch state dict; `torch.load(weights_only=True)` refuses any
pickled Python object (a whole pickled model, or worse) before it runs. Names are matched the ways
they are commonly saved: as is, with the `module.` of DataParallel/DDP, the `model.` of Lightning
or the `_orig_mod.` of torch.compile stripped, or in torchvision's names. What still does not fit
is listed by name in one error.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from robustcompress.errors import CheckpointError
from robustcompress.models.torchvision_names import to_zoo_names

PREFIXES = ("module.", "model.", "_orig_mod.")
WRAPPERS = ("state_dict", "model_state_dict", "model")  # training scripts' {"state_dict": ..., "epoch": ...}
SAVE_HINT = "save the weights with torch.save(model.state_dict(), path) or safetensors.torch.save_file"
SHOWN = 8  # key names listed per kind of mismatch


@dataclass
class FitReport:
    """How a file's names were matched to the model, and which head tensors were left re-initialised."""

    stripped: list[str] = field(default_factory=list)
    torchvision_names: bool = False
    replaced: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a PyTorch state dict; nothing in the file is ever run."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder; give a weights file (.safetensors or .pth). "
            "A robustcompress checkpoint folder needs no import: use it directly."
        )
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # 8-byte header length, then JSON
        try:
            return safetensors.torch.load_file(str(path))
        except (OSError, ValueError, safetensors.SafetensorError) as exc:
            raise CheckpointError(
                f"cannot read {path} as safetensors ({exc}); the file is damaged or truncated: {SAVE_HINT}"
            ) from None
    return _unwrap(_torch_load(path), path)


def _torch_load(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(exc))  # the class or function the file names
        if unsafe:
            raise CheckpointError(
                f"refusing to unpickle {path}: it holds the Python object {unsafe[1]}, not just tensors "
                "(a whole pickled model, or code), and loading it could run arbitrary code; nothing in it "
                f"was run. Load the model where it was made and {SAVE_HINT}."
            ) from None
        raise CheckpointError(
            f"cannot read {path}: it is not a PyTorch state dict saved by torch.save, or it is damaged "
            f"(nothing in it was run); {SAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError):
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or damaged, or not a weights file; {SAVE_HINT}"
        ) from None


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """A state dict, also from inside a training checkpoint dict; non-tensor entries are refused."""
    while isinstance(obj, dict) and not _is_state_dict(obj):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not _is_state_dict(obj):
        kind = (
            type(obj).__name__ if not isinstance(obj, dict) else f"dict with keys {sorted(map(str, obj))[:6]}"
        )
        raise CheckpointError(f"{path} holds a {kind}, not a state dict of named tensors; {SAVE_HINT}")
    return obj


def _is_state_dict(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def fit_state_dict(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    model_name: str = "",
    num_classes: int | None = None,
    replace_head: bool = False,
    where: str = "the weights",
    fix: str = "",
) -> FitReport:
    """Load `state` into `model` (strict), trying the usual renamings; else one error naming every key.

    `model_name` (a zoo name) lets torchvision's names be read. With `replace_head`, tensors whose only
    difference is the first dimension, `num_classes` in the model (the classifier head, for transfer
    learning), keep the model's fresh initialisation and are reported as replaced.
    """
    expected = model.state_dict()
    state, report = _best_naming(state, expected, model_name)
    # batch-norm step counters are absent from files saved before PyTorch 0.4.1 (early torchvision
    # weights among them) and not used in eval or with a fixed momentum: the model's own are kept
    kept = [k for k in expected if k not in state and k.endswith(".num_batches_tracked")]
    missing = [k for k in expected if k not in state and k not in kept]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    head = [k for k in wrong if _head_like(state[k].shape, expected[k].shape, num_classes)]
    if replace_head:
        report.replaced = head
        wrong = [k for k in wrong if k not in head]
    elif head and head == wrong and not missing and not unexpected:
        k = head[0]
        raise CheckpointError(
            f"{where} have {state[k].shape[0]} classes ({k}: {_shape(state[k])}) but the model has "
            f"{num_classes}: pass --num-classes {num_classes} (num_classes={num_classes} in Python) to "
            "replace the classifier head with a new one, initialised from the seed, for transfer learning; "
            f"or use a dataset with {state[k].shape[0]} classes"
        )
    if missing or unexpected or wrong:
        lines = [f"{where} do not fit the model:"]
        if missing:
            lines.append(f"  missing (in the model, not in the file): {_names(missing)}")
        if unexpected:
            lines.append(f"  unexpected (in the file, not in the model): {_names(unexpected)}")
        if wrong:
            shapes = [
                f"{k} {_shape(state[k])} in the file, {_shape(expected[k])} in the model" for k in wrong
            ]
            lines.append(f"  wrong shape: {_names(shapes)}")
        lines.append(fix or "Build the architecture the weights were saved from, with their class count.")
        raise CheckpointError("\n".join(lines))
    for k in [*report.replaced, *kept]:
        state[k] = expected[k]
    model.load_state_dict(state, strict=True)
    return report


def _best_naming(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], model_name: str
) -> tuple[dict[str, torch.Tensor], FitReport]:
    """The reading of the file's names that fits the model best; on a tie, the most stripped one."""
    readings = [(state, FitReport())]
    while True:
        current, report = readings[-1]
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in current)), None)
        if prefix is None:
            break
        stripped = {k[len(prefix) :]: v for k, v in current.items()}
        readings.append((stripped, FitReport(stripped=[*report.stripped, prefix])))
    for current, report in list(readings):
        mapping = to_zoo_names(model_name, current)
        if any(k != v for k, v in mapping.items()):
            renamed = {mapping[k]: v for k, v in current.items()}
            readings.append((renamed, FitReport(stripped=report.stripped, torchvision_names=True)))

    def score(i: int):
        current = readings[i][0]
        same = [k for k in current if k in expected]
        return (
            sum(current[k].shape == expected[k].shape for k in same),
            len(same),
            len(readings[i][1].stripped),
        )

    best = max(range(len(readings)), key=score)
    return dict(readings[best][0]), readings[best][1]


def _head_like(found: torch.Size, wanted: torch.Size, num_classes: int | None) -> bool:
    """Differs only in the first (output) dimension, which is the model's class count."""
    return (
        num_classes is not None
        and len(found) == len(wanted) >= 1
        and wanted[0] == num_classes
        and found[1:] == wanted[1:]
    )


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f" ... ({len(items)} in all)" if len(items) > SHOWN else "")


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))
