"""Several processes, one run: `torchrun` with DistributedDataParallel, on GPUs (NCCL) or CPUs (gloo).

`python -m core.train` works unchanged under ``torchrun --nproc-per-node N``. Every rank holds the
dataset and draws the same augmentation for the whole global batch from the same seeded generator,
then trains on its own slice of it (``batch[rank::world]``), so the views are those a single process
would see; gradients are averaged across ranks. Rank 0 alone writes the run directory. On GPUs batch
norm is synchronised across ranks; on CPUs (gloo cannot) each rank normalises over its own slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from core.errors import StudioError


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # A gloo group over the same processes for host-side flags: agreeing on a stop after every step then
    # costs a message between processes, not a wait for each GPU to drain its queue (as NCCL would).
    control: object = field(default=None, compare=False, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device: str) -> Group:
    """Join the process group torchrun describes in the environment; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Group(rank, world, local, control=dist.new_group(backend="gloo"))


def rank_device(group: Group, device: str) -> str:
    """Each rank trains on its own GPU (cuda:LOCAL_RANK); on CPUs they share the machine."""
    if group.active and device != "cpu" and torch.cuda.is_available():
        return f"cuda:{group.local_rank}"
    return device


def share(group: Group, value):
    """Rank 0's value (any picklable object) on every rank."""
    if not group.active:
        return value
    box = [value if group.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_outcome(group: Group, fn):
    """Run `fn` on rank 0 only and give every rank its result, or raise its StudioError on every rank."""
    outcome = None
    if group.main:
        try:
            outcome = ("ok", fn())
        except StudioError as e:
            outcome = ("error", str(e))
    outcome = share(group, outcome)
    if outcome[0] == "error":
        raise StudioError(outcome[1])
    return outcome[1]


def sum_(group: Group, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor."""
    if group.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_(group: Group, flag: bool) -> bool:
    """True on every rank if it is true on any: ranks agree on when to stop. Host memory only, over the
    control group, so the GPUs keep their queued work."""
    if not group.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group.control)
    return bool(t.item())


def gather_rows(group: Group, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate each rank's rows in rank order (all ranks hold equal counts)."""
    if not group.active:
        return rows
    parts = [torch.empty_like(rows) for _ in range(group.world)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """The module to call for training steps: DDP around `model` when there are several ranks."""
    if not group.active:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return torch.nn.parallel.DistributedDataParallel(model)


def finish(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
