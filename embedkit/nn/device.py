"""One place that decides the training device and its precision (used by training and inference alike)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else the CPU. An explicit ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was asked for but no CUDA GPU is available; use device='auto' or 'cpu'"
        )
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA: bf16 where the GPU supports it, else fp16. None on the CPU (full fp32)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ---- CPU threads -----------------------------------------------------------------------------------
#: below this batch size training uses one CPU thread: a step's kernels are too small to split, and
#: waiting threads cost more than they save (on a busy 2-core host, the default threads trained 198
#: rows/s at batch 64 and one thread 32,519)
SMALL_BATCH = 256


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, bounded by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(n, quota)) if quota else max(1, n)


def _cgroup_cpu_quota() -> int | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), rounded up; None if unlimited."""
    try:
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            return max(1, math.ceil(int(parts[0]) / int(parts[1])))
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def training_threads(requested: int | None, batch_size: int) -> int:
    """Threads for a CPU training run: ``requested`` (``TrainConfig.threads``) when given, else one for
    batches below ``SMALL_BATCH`` rows; above it the CPUs the process may use (:func:`available_cpus`),
    shared among the processes of a ``torchrun`` on this machine (``LOCAL_WORLD_SIZE``), and at most
    ``OMP_NUM_THREADS`` when that is set (torchrun and joblib's workers set it against oversubscribing)."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1 or None, got {requested}")
        return int(requested)
    if batch_size < SMALL_BATCH:
        return 1
    n = available_cpus() // max(1, _env_int("LOCAL_WORLD_SIZE") or 1)
    omp = _env_int("OMP_NUM_THREADS")
    return max(1, min(n, omp) if omp else n)


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
