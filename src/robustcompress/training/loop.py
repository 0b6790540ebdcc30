"""The fit loop: one loop for every objective, with early stopping, checkpoints and exact resume.

Resume is exact because nothing depends on hidden state: the data order and dropout of epoch e
are seeded from (seed, e), the learning rate is a function of e, and the optimizer state is saved.
A run killed mid-epoch restarts that epoch from the last epoch checkpoint.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from robustcompress.checkpoint import WEIGHTS, load_weights, read_meta, save_checkpoint, spec_of
from robustcompress.device import resolve_device
from robustcompress.errors import CheckpointError
from robustcompress.measure import accuracy
from robustcompress.progress import progress_bar
from robustcompress.training import distributed
from robustcompress.training.augment import augment_batch
from robustcompress.training.config import TrainConfig
from robustcompress.training.objectives import make_objective
from robustcompress.training.sam import SAM

OPTIMIZER_FILE = "optimizer.safetensors"
BEST_FILE = "best.safetensors"


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_acc: float = float("nan")
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    data: Any,
    cfg: TrainConfig,
    objective: Any = None,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    sam: Callable[[torch.optim.Optimizer, nn.Module], SAM] | None = None,
) -> TrainResult:
    """Train `model` in place on data.train, selecting on data.val; returns the per-epoch history.

    `objective(model, x, y) -> (loss, logits)`; default: cfg.objective. With `checkpoint_dir` a
    checkpoint is written after every epoch; `resume=True` continues from it. `cfg.sam_rho` makes
    every step sharpness-aware (training/sam.py); `sam(optimizer, model)` builds another SAM-like
    wrapper instead (CrAM).

    Under `torchrun --nproc-per-node=N` every rank runs this with the same arguments: each trains on
    its slice of every global batch (`cfg.batch_size` over all ranks), gradients are averaged
    (training/distributed.py), validation and early stopping agree on all ranks, and rank 0 alone
    writes the checkpoint and prints.
    """
    ranks, device = distributed.setup(resolve_device(device))
    progress = progress and (ranks is None or ranks.main)
    model.to(device)
    objective = objective or make_objective(cfg.objective, **cfg.objective_params)
    optimizer = make_optimizer(model, cfg)
    if sam is None and cfg.sam_rho is not None:
        sam = lambda base, net: SAM(base, net, cfg.sam_rho, cfg.grad_clip)  # noqa: E731
    sharp = sam(optimizer, model) if sam is not None else None
    amp_dtype = _amp_dtype(device, cfg.amp)
    if sharp is not None and amp_dtype == torch.float16:
        amp_dtype = None  # a gradient scaler cannot unscale SAM's two passes; fp32 where bf16 is missing
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    if resume and checkpoint_dir is not None and (Path(checkpoint_dir) / WEIGHTS).exists():
        start_epoch, result, best_state = _restore(Path(checkpoint_dir), model, optimizer, cfg)
        model.to(device)
        if result.stopped_early:
            start_epoch = cfg.epochs
    for cb in callbacks:
        _call(cb, "on_train_begin", model, optimizer)
    net = distributed.wrap(model, device) if ranks is not None else model  # the objective's forward
    writes = checkpoint_dir is not None and (ranks is None or ranks.main)

    t0 = time.perf_counter()
    step = start_epoch * _steps_per_epoch(len(data.train), cfg)
    for epoch in range(start_epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)
        torch.manual_seed(seed * 100_003 + epoch)  # dropout and in-objective randomness
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        model.train()
        stats = _train_epoch(
            net,
            model,
            ranks,
            data.train,
            cfg,
            objective,
            optimizer,
            scaler,
            amp_dtype,
            gen,
            device,
            callbacks,
            step,
            epoch,
            progress,
            sharp,
        )
        step += stats.pop("steps")
        model.eval()
        if ranks is not None:
            distributed.broadcast_state(model)  # rank 0's batch-norm statistics on every rank
        val_acc = _val_accuracy(model, data.val, cfg, ranks) if len(data.val) else stats["train_acc"]
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **stats, "val_acc": val_acc}
        result.history.append(row)
        improved = result.best_epoch < 0 or val_acc > result.best_val_acc + cfg.min_delta
        if improved:
            result.best_val_acc, result.best_epoch = val_acc, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if cfg.patience is not None and epoch + 1 - result.best_epoch >= cfg.patience:
            result.stopped_early = True
        for cb in callbacks:
            _call(cb, "on_epoch_end", epoch, model, row)
        if progress:
            print(_format_row(row), file=sys.stderr)
        if writes:
            _save(Path(checkpoint_dir), model, optimizer, cfg, result, best_state, epoch + 1, meta)
        if ranks is not None:
            distributed.barrier()  # the checkpoint is complete before any rank goes on
        if result.stopped_early:
            break
    result.seconds = time.perf_counter() - t0
    if cfg.restore_best and best_state is not None and len(data.val):
        model.load_state_dict(best_state)
        if writes and result.history:
            _save(Path(checkpoint_dir), model, optimizer, cfg, result, best_state, len(result.history), meta)
    if ranks is not None:
        del net  # the DDP wrapper's gradient hooks go with it
        distributed.barrier()
    model.eval()
    return result


def _val_accuracy(model, val, cfg, ranks) -> float:
    """Accuracy on the validation split; under torchrun each rank counts a slice, summed exactly."""
    if ranks is None:
        return accuracy(model, val, cfg.eval_batch_size)
    part = torch.arange(len(val))[ranks.shard(len(val))]
    correct = round(accuracy(model, val.subset(part), cfg.eval_batch_size) * len(part)) if len(part) else 0
    return distributed.all_sum([correct], next(model.parameters()).device)[0] / len(val)


def _train_epoch(
    net, model, ranks, train, cfg, objective, optimizer, scaler, amp_dtype, gen, device, callbacks, step,
    epoch, progress, sharp=None,
):  # fmt: skip
    """One epoch; `net` is what the objective calls (the DDP wrapper of `model` under torchrun)."""
    n_steps = _steps_per_epoch(len(train), cfg)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = progress_bar(n_steps, f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress, unit="step")
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(train.batches(cfg.batch_size, shuffle=True, generator=gen)):
        if i >= n_steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.augment:
            x = augment_batch(x, cfg.augment, gen, cfg.crop_padding)  # the global batch
        weight = 1.0
        if ranks is not None:
            if len(y) < ranks.world:
                continue  # a last batch smaller than the number of ranks: skipped by every rank alike
            part = ranks.shard(len(y))
            weight = (part.stop - part.start) * ranks.world / len(y)  # averaged gradient = global mean
            x, y = x[part], y[part]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, logits = objective(net, x, y)
        optimizer.zero_grad(set_to_none=True)
        scaled = loss if weight == 1.0 else loss * weight
        if scaler is not None:
            scaler.scale(scaled).backward()
            scaler.unscale_(optimizer)
        else:
            scaled.backward()
        if sharp is not None:  # second pass at the ascent point, base step, masks re-applied
            sharp.step(lambda x=x, y=y, w=weight: _second_pass(net, objective, x, y, device, amp_dtype, w))
        else:
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        for cb in callbacks:
            _call(cb, "on_step_end", step + i + 1, model)
        if progress and (i % 20 == 0 or i == n_steps - 1):
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}",
                acc=f"{correct.item() / seen:.3f}",
                img_s=f"{rate:.0f}",
                refresh=False,
            )
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - t0
    if ranks is not None:  # the epoch's figures over all ranks' slices
        total_loss, total_correct, seen = distributed.all_sum([loss_sum.item(), correct.item(), seen], device)
        loss_sum, correct, seen = torch.tensor(total_loss), torch.tensor(total_correct), int(seen)
    return {
        "train_loss": loss_sum.item() / max(seen, 1),
        "train_acc": correct.item() / max(seen, 1),
        "images_per_s": seen / max(elapsed, 1e-9),
        "steps": min(n_steps, i + 1) if seen else 0,
    }


def _second_pass(model, objective, x, y, device, amp_dtype, weight=1.0) -> torch.Tensor:
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss, _ = objective(model, x, y)
    (loss if weight == 1.0 else loss * weight).backward()
    return loss


def _steps_per_epoch(n: int, cfg: TrainConfig) -> int:
    steps = -(-n // cfg.batch_size)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def _amp_dtype(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _call(cb, name, *args):
    fn = getattr(cb, name, None)
    if fn is not None:
        fn(*args)


def _format_row(row: dict[str, float]) -> str:
    return (
        f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
        f"val acc {row['val_acc']:.4f}  lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s"
    )


def _save(directory, model, optimizer, cfg, result, best_state, epochs_done, meta):
    tensors, layout = _flatten_optimizer(optimizer)
    extra = {OPTIMIZER_FILE: safetensors.torch.save(tensors)}
    if best_state is not None:
        extra[BEST_FILE] = safetensors.torch.save({k: v.contiguous() for k, v in best_state.items()})
    training = {
        "config": cfg.model_dump(),
        "epochs_done": epochs_done,
        "history": result.history,
        "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "optimizer_layout": layout,
    }
    save_checkpoint(directory, model, {**(meta or {}), "training": training}, extra_files=extra)


def _restore(directory: Path, model, optimizer, cfg):
    meta = read_meta(directory)
    if meta["model"] != spec_of(model):
        raise CheckpointError(
            f"cannot resume from {directory}: it holds a {meta['model'].get('name')!r} model with "
            f"{meta['model'].get('num_classes')} classes, "
            f"not the {spec_of(model).get('name')!r} being trained; "
            "use another --out folder or drop --resume"
        )
    training = meta.get("training")
    if not training:
        raise CheckpointError(f"{directory} has no training state to resume from; drop --resume")
    load_weights(model, directory / WEIGHTS)
    tensors = safetensors.torch.load_file(str(directory / OPTIMIZER_FILE))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, training["optimizer_layout"]))
    best_state = None
    if (directory / BEST_FILE).exists():
        best_state = safetensors.torch.load_file(str(directory / BEST_FILE))
    result = TrainResult(
        history=training["history"],
        best_val_acc=training["best_val_acc"],
        best_epoch=training["best_epoch"],
        stopped_early=training["stopped_early"],
    )
    return training["epochs_done"], result, best_state


def _flatten_optimizer(optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as safetensors tensors plus a JSON layout (no pickle)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(layout["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": copy.deepcopy(layout["param_groups"])}


def training_summary(result: TrainResult) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "epochs": len(result.history),
                "best_val_acc": result.best_val_acc,
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "seconds": round(result.seconds, 2),
            }
        )
    )
