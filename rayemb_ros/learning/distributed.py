"""Data-parallel training across processes (``torchrun --nproc_per_node N ... rayemb train``):
which rank this process is, its device, and the few collective steps training needs.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a single process and
every function here is a no-op. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rayemb_ros.learning.device import pick_device


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, logs and the progress bar."""
        return self.rank == 0


def start(device: str) -> tuple[Ranks, torch.device]:
    """This process's rank (joining the process group under torchrun) and its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), pick_device(device)
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(chosen)
    dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", rank=ranks.rank, world_size=world)
    return ranks, chosen


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model as the training step calls it: DistributedDataParallel across ranks (gradients
    averaged in the backward pass, the weights broadcast from rank 0 at the start)."""
    if ranks.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if ranks.world == 1:
        return [value]
    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def stop(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
