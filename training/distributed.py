"""Data-parallel set-up of a ``train`` run: under ``torchrun`` (or with WORLD_SIZE / RANK set) one process
per rank, gloo on CPU, nccl on CUDA; rank 0 writes every file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """This process's place in the run (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as the step calls it: DDP-wrapped when there is more than one process."""
        if self.world > 1:
            return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
        return module


def init_distributed(device: str) -> Dist:
    """Join the process group the environment describes (no group for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
