"""Data-parallel training across processes, and a loader that reads the next batch during a step.

Data parallelism. Under torchrun (or any `torch.distributed` process group) every process holds
the whole drafter and takes a slice of each optimizer step's sequences (`local`): the global
batch is the one a single process would train on. Each process scales its summed loss by the
global count of counted rows (`all_sum`), so summing the processes' gradients (`sync_grads`)
gives exactly the single-process gradient of the global batch, up to the order of float
additions; every process then takes the same optimizer step and the weights stay equal.

Gradients are summed explicitly rather than through `DistributedDataParallel`: a step may hold
fewer sequences than processes (a long sequence goes alone), and a process with nothing to
compute must still join the reduction, which DDP's forward hooks cannot express. The drafter
is small (fc and one layer), so one flat all-reduce per step costs little against its compute.

Prefetching. `Prefetcher` reads a step's sequences (feature slices from disk, or the target's
online features) in a background thread while the step before it trains; what it reads does not
depend on the training state, so results equal those of reading in line.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if distributed() else 1


def is_main() -> bool:
    """The process that validates and writes (rank 0, or the only one)."""
    return rank() == 0


def local(seqs: Sequence[int]) -> list[int]:
    """This process's share of a step's sequences: every world_size-th, from its rank (they come longest first)."""
    return list(seqs[rank()::world_size()])


def all_sum(values: Tensor) -> Tensor:
    """values summed over the processes (values itself with one process)."""
    if distributed():
        values = values.clone()
        dist.all_reduce(values)
    return values


def sync_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the processes, in one flat all-reduce (no gradient counts as zeros)."""
    if not distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g


def barrier() -> None:
    if distributed():
        dist.barrier()


class Prefetcher:
    """`read(step)` for the steps of `steps`, each submitted to a background thread one step ahead."""

    def __init__(self, read: Callable[[int], object], steps: range):
        self.read, self.steps = read, steps
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self.pending: dict[int, Future] = {}

    def get(self, step: int):
        future = self.pending.pop(step, None) or self.pool.submit(self.read, step)
        if step + 1 in self.steps:
            self.pending[step + 1] = self.pool.submit(self.read, step + 1)
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
