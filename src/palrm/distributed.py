"""Data-parallel helpers on torch.distributed (launched by `torchrun`).

`torchrun --nproc_per_node N -m palrm train ...` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in
each process's environment; `init_from_env` joins the process group (gloo on the CPU, NCCL on CUDA)
and every other helper is a no-op in a single process, so library code calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: `rank` of `world_size`, and the torch device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes checkpoints, logs, models and metrics."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun prepared (no-op without torchrun). Returns this process's DistInfo.

    `device` is the configured device: "cuda" becomes "cuda:LOCAL_RANK" with the NCCL backend; the
    CPU uses gloo.
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    on_cuda = device.startswith("cuda")
    if on_cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
        logger.info("joined process group: rank %d of %d (%s)", rank, world, dist.get_backend())
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def current() -> DistInfo:
    """DistInfo of an already initialised process group (or the single-process default)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: str = "cpu") -> list[float]:
    """Sum float values over all ranks (float64; identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
