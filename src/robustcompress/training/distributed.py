"""One training on several processes: the fit loop under `torchrun --nproc-per-node=N`.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 the fit loop joins the process
group (NCCL on CUDA, gloo on CPU), wraps the model in DistributedDataParallel (gradients averaged,
buffers broadcast from rank 0) and gives each rank its equal slice of every global batch of the
epoch's seeded permutation. Every rank draws the same permutation and augments the same global
batch, so the averaged gradient is the single-process gradient up to summation order (batch-norm
statistics excepted: each rank normalises its own slice). Rank 0 alone writes and prints.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous, near-equal part of a batch of `n` examples."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)


def ranks() -> Ranks | None:
    """The torchrun ranks of this process, or None for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))


def is_main_process() -> bool:
    """True unless this is a torchrun rank other than 0 (what only one process should write or print)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def use_local_gpu() -> None:
    """Under torchrun on GPUs, make "cuda" mean this rank's GPU (cuda:LOCAL_RANK) for all later work."""
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def setup(device: torch.device) -> tuple[Ranks | None, torch.device]:
    """Join the process group when run by torchrun; the device of this rank (cuda:LOCAL_RANK on GPUs)."""
    where = ranks()
    if where is None:
        return None, device
    if device.type == "cuda":
        device = torch.device("cuda", where.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return where, device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model inside DistributedDataParallel: rank 0's parameters and buffers broadcast to all."""
    from torch.nn.parallel import DistributedDataParallel

    # a 1-channel first conv's gradient has strides that differ from its bucket's; harmless, once
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)  # buffers broadcast from rank 0 by default


@torch.no_grad()
def broadcast_state(model: nn.Module) -> None:
    """Make every rank's parameters and buffers rank 0's (batch-norm statistics included)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        torch.distributed.broadcast(tensor.data, src=0)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """The sums over all ranks (float64, so counts of examples stay exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    torch.distributed.barrier()
