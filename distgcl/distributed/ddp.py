"""Data-parallel wrapping for the methods' trainable modules.

:func:`wrap_ddp` wraps a module in :class:`~torch.nn.parallel.DistributedDataParallel` with a
communication hook that **sums** the ranks' gradients instead of averaging them. Every method
normalises its loss by the step's *global* anchor count (:class:`distgcl.work.Share`), so the
summed gradient is exactly the single-process gradient of a full-batch objective and the mean over
the global batch for mini-batches, whatever the ranks' share sizes (PyTorch's default hook divides
by the world size, which is only right for equal shares of a mean loss).
"""
# No `from __future__ import annotations`: DDP checks the hook's annotations as real types.
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


def _sum_allreduce_hook(process_group: Optional[dist.ProcessGroup],
                        bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def wrap_ddp(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``module`` in DDP (process group already initialised) with summed gradients."""
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=device_ids)
    ddp.register_comm_hook(None, _sum_allreduce_hook)
    return ddp
