"""Data-parallel training across processes: the process group, rank 0's role, and each rank's share of an
epoch. A thin layer over ``torch.distributed``; ``torchrun`` starts the processes and sets their
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

Under a process group of more than one process, :class:`~embedkit.nn.learner.Learner` and
:class:`~embedkit.nn.trainer.Trainer` train with ``DistributedDataParallel``: every rank must call them in the
same order with the same data. Rank 0 fits the preprocessor and runs the LR finder and hands the results to
the others; only rank 0 writes checkpoints. Outside a process group (or with one process) every function
here is a no-op and training takes the single-process path.

Example (one process, so nothing is distributed)
------------------------------------------------
>>> from embedkit.nn import distributed
>>> distributed.world_size(), distributed.is_main()
(1, True)
>>> import torch
>>> distributed.shard(torch.arange(10), rank=1, world=3).tolist()
[1, 4, 7]
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..exceptions import EmbedkitError
from .device import resolve_device

log = logging.getLogger("embedkit")

T = TypeVar("T")
BACKENDS = ("gloo", "nccl")


class DistributedError(EmbedkitError, RuntimeError):
    """The process group cannot be set up as asked, or another rank failed; the message says which."""


# ---- who am I ---------------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def is_active() -> bool:
    """True inside an initialised process group of more than one process (training runs DDP)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: from the process group, else from torchrun's ``RANK`` (0 when unset)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes: from the process group, else from torchrun's ``WORLD_SIZE`` (1 when unset)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``): its GPU under NCCL."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the one process that logs, saves and writes checkpoints (and without torchrun)."""
    return rank() == 0


# ---- the process group ------------------------------------------------------------------------------
def default_backend(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: str | torch.device = "auto", backend: str | None = None) -> None:
    """Join the process group torchrun set up (a no-op for a single process or a group already joined).

    ``backend`` defaults to NCCL when ``device`` resolves to CUDA, else gloo. Under CUDA each process takes
    the GPU of its ``LOCAL_RANK`` (``torch.cuda.set_device``), so ``device="cuda"`` means that GPU.
    """
    world = world_size()
    if world < 1:
        raise DistributedError(f"WORLD_SIZE is {world}; it must be at least 1 (torchrun --nproc-per-node N)")
    if backend is not None and backend not in BACKENDS:
        raise DistributedError(f"backend {backend!r} is not supported; use one of {list(BACKENDS)}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise DistributedError(
            "backend 'nccl' was asked for but this machine has no CUDA GPU; use backend 'gloo' "
            "(the default on the CPU) or run on a machine with GPUs"
        )
    if world == 1 or is_active():
        return
    dev = resolve_device(device)
    if dev.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank() >= n_gpus:
            raise DistributedError(
                f"process with LOCAL_RANK {local_rank()} has no GPU of its own: this machine has {n_gpus}; "
                f"start at most {n_gpus} processes per node (--nproc-per-node / --nproc)"
            )
        dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)
    if not dist.is_available():
        raise DistributedError("this build of torch has no torch.distributed; distributed training needs it")
    if "MASTER_ADDR" not in os.environ:
        raise DistributedError(
            f"WORLD_SIZE is {world} but MASTER_ADDR is not set: start the processes with torchrun "
            "(e.g. torchrun --standalone --nproc-per-node 2 -m pipelines.train --config FILE)"
        )
    chosen = backend or default_backend(dev)
    if chosen == "nccl" and dev.type != "cuda":
        raise DistributedError(
            f"backend 'nccl' needs CUDA tensors but training runs on {dev}; use backend 'gloo' or device 'cuda'"
        )
    dist.init_process_group(backend=chosen, device_id=dev if chosen == "nccl" else None)
    log.info("rank %d of %d joined the %s process group on %s", rank(), world, chosen, dev)


def destroy() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto", backend: str | None = None) -> Iterator[None]:
    """:func:`init` on entry and :func:`destroy` on exit; leaves a group it did not create alone."""
    owned = not (dist.is_available() and dist.is_initialized())
    init(device, backend)
    try:
        yield
    except BaseException:
        if owned:
            destroy()
        raise
    if owned:
        # leave together: a rank that tears down its group (and exits) while rank 0 is still saving
        # has been seen to abort in gloo's teardown ("terminate called without an active exception"),
        # and torchrun then kills rank 0 mid-save. Objects still holding the group (a DDP reducer kept
        # alive by reference cycles) are collected first, while the group still exists.
        gc.collect()
        barrier()
        destroy()


# ---- collectives (all no-ops for a single process) -------------------------------------------------
def barrier() -> None:
    if is_active():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled in flight; pass plain data: dicts, lists, numbers)."""
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def run_on_main(fn: Callable[[], T]) -> T:
    """Call ``fn`` on rank 0 only and return its result on every rank.

    An exception on rank 0 is raised there as is; the other ranks raise :class:`DistributedError` naming
    it, instead of waiting for a result that never comes.
    """
    if not is_active():
        return fn()
    payload: tuple[bool, Any] = (True, None)
    error: BaseException | None = None
    if is_main():
        try:
            payload = (True, fn())
        except BaseException as exc:
            error = exc
            payload = (False, f"{type(exc).__name__}: {exc}")
    ok, value = broadcast_object(payload)
    if error is not None:
        raise error
    if not ok:
        raise DistributedError(f"rank 0 failed: {value}")
    return value  # type: ignore[no-any-return]


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on at least one (keeps decisions in lock-step)."""
    if not is_active():
        return flag
    t = torch.tensor([int(flag)], device=device or _collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the ranks (gloo has no AVG: a SUM divided by the world size)."""
    if not is_active():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.div_(dist.get_world_size())


def check_same_weights(module: torch.nn.Module, device: torch.device | None = None) -> None:
    """Raise :class:`DistributedError` unless every rank holds the same weights (compared through a
    checksum: the float64 sum of all parameters and buffers, whose min and max over ranks must agree).

    DDP keeps replicas equal only while every rank steps with the same gradients, rate and schedule; this
    turns a silent drift (a rank with another learning rate, say) into an error.
    """
    if not is_active():
        return
    with torch.no_grad():
        total = sum(
            (t.detach().double().sum() for t in module.state_dict().values()),
            torch.zeros((), dtype=torch.float64),
        )
    dev = device or _collective_device()
    lo = total.reshape(1).to(dev)
    hi = lo.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise DistributedError(
            f"the ranks hold different weights (checksums from {lo.item()!r} to {hi.item()!r}); every rank "
            "must train with the same config, data and learning rate"
        )


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch-norm running statistics) to every rank, in place."""
    if not is_active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=src)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---- each rank's share of an epoch -----------------------------------------------------------------
def shard(perm: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s rows of an epoch's permutation: every ``world``-th index from position ``rank``.

    The last ``len(perm) % world`` positions are dropped so that every rank gets the same number of rows,
    hence the same number of steps: a rank with one step more would wait forever in the gradient
    all-reduce. The permutation changes every epoch, so the dropped rows differ between epochs.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) with world >= 1; got rank {rank}, world {world}")
    usable = perm.numel() // world * world
    return perm[rank:usable:world]
