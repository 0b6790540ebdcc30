"""A compact Adam fine-tuning loop with early stopping, used inside compression stages.

Paper 000 fine-tunes every compressed model with Adam for at most 30 epochs, early stopping with
patience 5 on validation accuracy (none while pruning). Stages call this with their own budget.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, bs: int = 512) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(x[i : i + bs].to(device)).argmax(1).cpu() == y[i : i + bs]).sum().item()
    return correct / max(1, len(x))


def finetune(
    model: nn.Module,
    data,
    epochs: int,
    lr: float = 1e-4,
    patience: int | None = 5,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    seed: int = 0,
    log: Callable[[str], None] = lambda msg: None,
) -> list[dict[str, float]]:
    """Train `model` in place on data.train with Adam; keep the best validation weights.

    `data` is a DataSplits (uses .train and .val). Returns the per-epoch history.
    """
    if epochs <= 0:
        return []
    device = torch.device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = data.train.x, data.train.y
    val = getattr(data, "val", None)
    has_val = val is not None and len(val) > 0
    best_acc, best_state, bad, history = -1.0, None, 0, []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total, n = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x, y = xt[idx].to(device), yt[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            n += len(idx)
        row = {"epoch": epoch + 1, "loss": total / max(1, n)}
        if has_val:
            row["val_acc"] = _accuracy(model, val.x, val.y, device)
            if row["val_acc"] > best_acc:
                best_acc, best_state, bad = row["val_acc"], copy.deepcopy(model.state_dict()), 0
            else:
                bad += 1
        history.append(row)
        log(f"fine-tune epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        if has_val and patience is not None and bad >= patience:
            log(f"early stop after epoch {epoch + 1} (no improvement for {patience} epochs)")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
