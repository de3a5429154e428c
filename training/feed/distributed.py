"""Data-parallel training on torch.distributed: the process group torchrun describes, and the few decisions that
every rank must take alike.

``torchrun --nproc-per-node N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` set; :func:`init_from_env` joins them into one gloo process group (CPU). Without ``WORLD_SIZE``
nothing is initialised and every helper here is the identity, so a plain process runs the single-process path
unchanged. Gradients are averaged by :class:`torch.nn.parallel.DistributedDataParallel`, never here; this module
only makes control flow agree: a rank that stops early while another waits in a collective would hang both, so
decisions that read the clock or validation (stop now? train on?) are taken by rank 0 and broadcast.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["active", "agree", "finish", "init_from_env", "is_main", "launched", "mean", "rank", "world_size"]


def launched() -> bool:
    """True when this process was started by torchrun (or any launcher that sets ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def init_from_env(timeout_s: float = 600.0) -> bool:
    """Joins the gloo process group torchrun's environment describes; returns whether one is active.

    A no-op (``False``) without ``WORLD_SIZE``, or when the group already exists (``True``). ``timeout_s``
    bounds how long a collective waits for a rank that died.
    """
    if not launched():
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    return True


def finish() -> None:
    """Leaves the process group, if one is active (each rank, at its end)."""
    if active():
        dist.destroy_process_group()


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 when not distributed)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the one that logs, registers and reports (and in a plain process)."""
    return rank() == 0


def agree(values: list[float]) -> list[float]:
    """Rank 0's ``values`` on every rank (a broadcast; the values themselves when not distributed).

    Every rank must call it at the same point with a list of the same length.
    """
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def mean(value: float) -> float:
    """The mean of ``value`` over the ranks (a figure to report, such as an epoch's loss)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()
