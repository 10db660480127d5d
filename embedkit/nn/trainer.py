"""The training loop: mini-batches over tensors on the device, AdamW + one-cycle, validation, early stopping,
atomic checkpoints, resume, and the practical guards (NaN/inf loss, CUDA out-of-memory).

Reads as its names: ``fit → run_epoch → train_step``, with callbacks notified at each named event.

Inside a process group of more than one process (``torchrun``, see :mod:`embedkit.nn.distributed`) the same
loop trains with ``DistributedDataParallel``: each rank takes its shard of every epoch's permutation, the
gradients are averaged across ranks, and every decision (NaN guard, early stopping, stop requests) is taken
identically on all ranks so that they stay in lock-step. With one process none of that runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .._io import atomic_path
from ..evaluation import MONITOR, task_metrics
from ..exceptions import FormatError, TrainingDivergedError
from ..preprocessing import N_RESERVED, UNKNOWN
from . import distributed
from .callbacks import Callback, CallbackList
from .device import amp_dtype, resolve_device, torch_threads, training_threads
from .model import TabularNet, loss_fn, to_prediction
from .optim import GroupedOptimizer, configure_optimizer, set_hyper
from .schedule import MAX_BATCH, MIN_EPOCHS, OneCycle, auto_batch_size, auto_epochs
from .tensors import TensorData

log = logging.getLogger("embedkit")

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 2


@dataclass
class TrainConfig:
    """How to train. Defaults are the course's: batch 1024, one-cycle, AdamW, lr from ``lr_find``."""

    # None: chosen from the number of training rows (embedkit.nn.schedule.auto_epochs / auto_batch_size:
    # 32 to 1,024 rows a batch, about 64 steps an epoch on small tables; 5 to 20 epochs, >= 600 steps)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # peak learning rate; None = the lr_find suggestion
    weight_decay: float = 0.01  # decoupled (AdamW); never on biases or batch-norm
    # whether embedding tables get weight decay too. Off: decoupled decay shrinks a weight by lr*wd per
    # step, negligible at wd 0.01, and on the flights example wd 0.1 and 1 on the tables did not raise the
    # validation AUC. Large tables decay lazily (touched rows only, see optim.py)
    decay_embeddings: bool = False
    pct_start: float = 0.25  # fraction of steps warming up
    div: float = 25.0  # start lr = lr / div
    final_div: float = 1e5  # final lr = lr / final_div
    moms: tuple[float, float] = (0.95, 0.85)  # Adam beta1: high → low → high
    grad_clip: float | None = None  # max gradient norm of the dense parameters
    early_stopping_patience: int | None = None  # epochs without improvement before stopping
    monitor: str | None = None  # validation metric to watch; default per task (log_loss / rmse)
    restore_best: bool = True  # end with the weights of the best validation epoch
    unknown_swap_prob: float = 0.02  # fraction of training codes swapped for "unknown" each batch
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported)
    # CPU threads of torch while training (and in the LR finder). None: one below batch 256, else every
    # CPU the process may use (affinity and cgroup quota; embedkit.nn.device.training_threads)
    threads: int | None = None
    eval_batch_size: int = 16384
    checkpoint_dir: str | None = None  # where checkpoint.pt is written after every epoch

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["moms"] = list(self.moms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "moms" in d:
            d["moms"] = tuple(d["moms"])
        return cls(**d)


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch, "best_score": self.best_score}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(list(d.get("epochs", [])), d.get("best_epoch"), d.get("best_score"))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _RetryEpoch(Exception):
    pass


_LOSS_READ_EVERY = 32  # on a GPU without per-batch callbacks: steps between reads of the losses
# added per rank to the seeds of dropout and of the "unknown" swaps, so that ranks draw different masks
# (rank 0 keeps the single-process seeds)
_RANK_SEED_STRIDE = 104_729
_heap_tuned = False


def _retain_freed_memory() -> None:
    """Stop glibc from returning freed heap memory to the OS after every training step (once per process).

    A step allocates and frees a few MB of activations and gradients. By default glibc trims the top of
    the heap whenever more than ~2x its largest recent allocation is free, so each step hands those pages
    back and faults them in again: ~400 page faults per step on the flights example (batch 1024), about
    5% of a CPU step. Here allocations below 32 MiB stay on the heap and up to 128 MiB of free heap is
    kept (the process's memory does not shrink back below that after training). Skipped off glibc and
    when the user sets any ``MALLOC_*`` variable or ``GLIBC_TUNABLES``, or preloads another allocator
    (``LD_PRELOAD``): ``MALLOC_TRIM_THRESHOLD_=131072`` keeps glibc's own behaviour.
    """
    global _heap_tuned
    if _heap_tuned:
        return
    _heap_tuned = True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    if any(k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "LD_PRELOAD") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 128 << 20)
    except (OSError, AttributeError):  # no mallopt in this C library
        log.debug("mallopt unavailable; leaving the allocator as it is")


class Trainer:
    """Trains a :class:`TabularNet` for a task (``regression``, ``binary`` or ``multiclass``)."""

    def __init__(
        self,
        model: TabularNet,
        task: str,
        config: TrainConfig | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.config = config or TrainConfig()
        self.callbacks = CallbackList(callbacks or [])
        self.device = resolve_device(self.config.device)
        self.amp = amp_dtype(self.device) if self.config.amp else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.history = History()
        self.stop_training = False
        # the batch size and the number of epochs of this run: the config's, or chosen from the training
        # rows by plan() (called by fit and by the LR finder)
        self.batch_size = self.config.batch_size or MAX_BATCH
        self.epochs = self.config.epochs or MIN_EPOCHS
        self.global_step = 0
        self.epoch = 0
        self.optimizer: GroupedOptimizer | None = None
        self.schedule: OneCycle | None = None
        self.checkpoint_path: Path | None = (
            Path(self.config.checkpoint_dir) / CHECKPOINT_NAME if self.config.checkpoint_dir else None
        )
        self._best_state: dict[str, torch.Tensor] | None = None
        self._warned_undefined = False  # the NaN-validation-metric warning: once per trainer
        self._last_good_state: dict[str, torch.Tensor] | None = None
        # data parallelism: the module that trains (the DDP wrapper during a distributed fit, else the
        # model), this rank and the number of ranks, and the training rows each rank sees per epoch
        self._net: torch.nn.Module | None = None
        self._per_batch: bool | None = None  # set by fit: see run_epoch
        self._rank, self._world = 0, 1
        self._n_train = self._n_local = 0
        if distributed.is_active():
            self._dense_embeddings_for_ddp()
            if self.device.type == "cuda" and self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.model.to(self.device)

    # ---- public API ----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (on each rank: every rank takes the same number)."""
        return max(1, math.ceil(self._n_local / self.batch_size))

    def plan(self, n_rows: int) -> tuple[int, int]:
        """Set the batch size and the number of epochs for ``n_rows`` training rows (per process): the
        config's where set, else :func:`~embedkit.nn.schedule.auto_batch_size` / ``auto_epochs``."""
        cfg = self.config
        self.batch_size = int(cfg.batch_size) if cfg.batch_size else auto_batch_size(n_rows)
        self.epochs = int(cfg.epochs) if cfg.epochs else auto_epochs(n_rows, self.batch_size)
        return self.batch_size, self.epochs

    @property
    def is_distributed(self) -> bool:
        """True while ``fit`` trains with DistributedDataParallel (more than one process)."""
        return self._world > 1

    def fit(
        self,
        train: TensorData,
        valid: TensorData | None = None,
        resume_from: str | Path | None = None,
        lr: float | None = None,
    ) -> History:
        """Train for ``config.epochs`` epochs, or as many as :meth:`plan` chooses, at the peak rate ``lr``
        (default ``config.lr``). With ``resume_from`` a checkpoint's run continues at its own rate."""
        cfg = self.config
        self._train = train.to(self.device)
        self._valid = valid.to(self.device) if valid is not None else None
        self._n_train = len(train)
        if self._n_train == 0:
            raise ValueError("the training data is empty")
        if distributed.is_active():
            self._rank, self._world = distributed.rank(), distributed.world_size()
            self._dense_embeddings_for_ddp()
        else:
            self._rank, self._world = 0, 1
        self._n_local = self._n_train // self._world
        if self._n_local == 0:
            raise ValueError(
                f"the training data has {self._n_train} rows for {self._world} processes; each process "
                "needs at least one row: use more data or fewer processes"
            )
        self.plan(self._n_local)
        start_epoch = 0
        if resume_from is not None:
            # the checkpoint's rate, optimizer state and place in the schedule carry on
            start_epoch = self.load_checkpoint(resume_from)
        else:
            peak = lr if lr is not None else cfg.lr
            if peak is None:
                raise ValueError(
                    "no learning rate: set TrainConfig.lr or run lr_find() and pass its suggestion"
                )
            self.lr_max = float(peak)
            self.optimizer = self.new_optimizer(self.lr_max)
            self._make_schedule()
        self._net = self._wrap_ddp() if self.is_distributed else self.model
        # whether the NaN guard reads each loss as it comes (see run_epoch): the same on every rank, or
        # one rank would stop at a batch where the others go on
        self._per_batch = self.device.type == "cpu" or distributed.any_rank(self._listens_to_batches())
        self.stop_training = False
        with self.cpu_threads():
            self._fit_epochs(start_epoch)
        if cfg.restore_best and self._best_state is not None:
            self.restore(self._best_state)
        return self.history

    def cpu_threads(self) -> contextlib.AbstractContextManager[None]:
        """The torch thread count of this run (``TrainConfig.threads``) for the block, on the CPU."""
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        return torch_threads(training_threads(self.config.threads, self.batch_size))

    def _fit_epochs(self, start_epoch: int) -> None:
        cfg = self.config
        self.callbacks.notify("on_train_begin", self)
        try:
            for epoch in range(start_epoch, self.epochs):
                self.epoch = epoch
                # dropout draws from torch's global generator: seeding it per epoch makes CPU runs
                # reproducible, a resumed run included (each rank draws its own masks)
                torch.manual_seed(cfg.seed * 1_000_003 + epoch + _RANK_SEED_STRIDE * self._rank)
                self._last_good_state = self.snapshot()
                logs = self._run_epoch_with_retries(epoch)
                logs.update(self._validate_epoch())
                self._update_best(epoch, logs)
                self.history.epochs.append(logs)
                if self.checkpoint_path is not None:
                    if self._rank == 0:
                        self.save_checkpoint(self.checkpoint_path, epoch + 1)
                    distributed.barrier()  # no rank runs ahead of a checkpoint being written
                self.callbacks.notify("on_epoch_end", self, epoch, logs)
                if self.is_distributed:  # a callback on any rank asking to stop stops them all
                    self.stop_training = distributed.any_rank(self.stop_training, self.device)
                if self._should_stop_early(epoch):
                    log.info(
                        "early stopping after epoch %d (best epoch %s)",
                        epoch + 1,
                        (self.history.best_epoch or 0) + 1,
                    )
                    break
                if self.stop_training:
                    break
        finally:
            self._net, self._per_batch = None, None
            self.callbacks.notify("on_train_end", self)

    # ---- one epoch -----------------------------------------------------------------------------
    def new_optimizer(self, lr: float) -> GroupedOptimizer:
        """AdamW over the net's parameter groups (:func:`~embedkit.nn.optim.configure_optimizer`) at
        ``lr``, with the config's weight decay and beta1 at the one-cycle's first momentum."""
        cfg = self.config
        return configure_optimizer(
            self.model, lr, cfg.weight_decay, cfg.decay_embeddings, betas=(cfg.moms[0], 0.99)
        )

    def _make_schedule(self) -> None:
        cfg = self.config
        self.schedule = OneCycle(
            self.lr_max,
            self.epochs * self.steps_per_epoch,
            cfg.pct_start,
            cfg.div,
            cfg.final_div,
            tuple(cfg.moms),  # type: ignore
        )  # type: ignore[arg-type]

    def _run_epoch_with_retries(self, epoch: int) -> dict[str, Any]:
        while True:
            try:
                return self.run_epoch(epoch)
            except _RetryEpoch:
                continue

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        return torch.randperm(self._n_train, generator=g).to(self.device)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        self.callbacks.notify("on_epoch_begin", self, epoch)
        perm = self._epoch_permutation(epoch)
        if self.is_distributed:
            # every rank draws the same permutation and keeps its own equal-sized shard of it
            perm = distributed.shard(perm, self._rank, self._world)
        gen = torch.Generator(device=self.device).manual_seed(
            self.config.seed * 7_919 + epoch + _RANK_SEED_STRIDE * self._rank
        )
        bs = self.batch_size
        data = self._train
        total, count = torch.zeros((), device=self.device), 0
        # The NaN guard reads every loss back; on a GPU each read waits for the step to finish, so there
        # the losses are read in groups (the weights are restored from the start of the epoch anyway),
        # unless a callback wants each batch's loss as it happens.
        per_batch = self._per_batch
        if per_batch is None:  # run_epoch called outside fit
            per_batch = self.device.type == "cpu" or self._listens_to_batches()
        pending: list[tuple[int, torch.Tensor]] = []
        t0 = time.perf_counter()
        step0 = epoch * self.steps_per_epoch
        for i, start in enumerate(range(0, self._n_local, bs)):
            idx = perm[start : start + bs]
            n = idx.numel()
            if n < 2 and self.model.config.use_bn:
                continue  # BatchNorm cannot train on a single row
            # index_select: about half the cost of ``data[idx]`` (TensorData.take) for these shapes
            batch = TensorData(
                self._swap_unknown(data.x_cat.index_select(0, idx), gen),
                data.x_cont.index_select(0, idx),
                data.y.index_select(0, idx),  # type: ignore[union-attr]
                None if data.w is None else data.w.index_select(0, idx),
            )
            self.global_step = step0 + i
            try:
                loss = self.train_step(batch)
            except TrainingDivergedError:
                raise
            except RuntimeError as exc:
                if not _is_oom(exc) or bs <= 1:
                    raise
                if self.is_distributed:
                    # the other ranks wait in this step's all-reduce: they cannot retry in step with us
                    raise RuntimeError(
                        f"CUDA out of memory on rank {self._rank} at batch size {bs} per process; the "
                        "automatic retry with a smaller batch works in single-process training only: "
                        "lower train.batch_size (or TrainConfig.batch_size) and start again"
                    ) from exc
                self._handle_oom(epoch, exc)
                raise _RetryEpoch() from exc
            if self.is_distributed:
                # the mean loss over the ranks: every rank logs it and every rank's NaN guard sees it
                loss = distributed.mean_over_ranks(loss)
            total += loss * n
            count += n
            if per_batch:
                loss_value = float(loss)
                if not math.isfinite(loss_value):
                    self._diverged(epoch, i, loss_value)
                self.callbacks.notify("on_batch_end", self, self.global_step, loss_value)
            else:
                pending.append((i, loss))
                if len(pending) == _LOSS_READ_EVERY:
                    self._check_losses(epoch, pending)
        self._check_losses(epoch, pending)
        seconds = time.perf_counter() - t0
        return {
            "epoch": epoch + 1,
            "train_loss": float(total) / max(count, 1),
            # all ranks together (each rank trains as many rows as the others)
            "rows_per_s": count * self._world / seconds if seconds > 0 else float("nan"),
            "lr": self.schedule.lr(self.global_step) if self.schedule else float("nan"),
            "batch_size": bs,
            "seconds": seconds,
        }

    # ---- data parallelism ----------------------------------------------------------------------
    def _dense_embeddings_for_ddp(self) -> None:
        """Under DDP every embedding table gets dense gradients.

        Row-sparse gradients (``nn.Embedding(sparse=True)``, the largest tables only: see
        ``model.SPARSE_MIN_ENTRIES``) are a fast path of one process, but DDP handles them badly: NCCL has
        no sparse all-reduce at all, and gloo's, the only one, has broken DDP in past releases
        (pytorch/pytorch#111422) and fails when one rank's batch touches no row of a table
        (pytorch/pytorch#87497). Dense gradients work the same on both backends. The tables that update
        lazily still do (``LazyAdamW`` moves the rows whose averaged gradient is non-zero: those some
        rank's batch touched), so the optimizer's layout is the same as in one process. The cost: each
        step all-reduces the whole table (rows x dim floats) instead of the touched rows, which matters
        for tables of millions of rows only. The model's config keeps ``sparse_embeddings``: it describes
        the architecture, and a bundle loaded later looks its largest tables up row-sparsely again.
        """
        for emb in self.model.embeds:
            assert isinstance(emb, torch.nn.Embedding)
            emb.sparse = False

    def _wrap_ddp(self) -> torch.nn.Module:
        ids = [self.device.index] if self.device.type == "cuda" else None
        # DDP broadcasts rank 0's weights and buffers on construction: every rank starts identical
        return DistributedDataParallel(self.model, device_ids=ids)

    def _listens_to_batches(self) -> bool:
        return any(type(cb).on_batch_end is not Callback.on_batch_end for cb in self.callbacks.callbacks)

    def _check_losses(self, epoch: int, pending: list[tuple[int, torch.Tensor]]) -> None:
        """The NaN guard for losses kept on the device: one read-back for the group, then clear it."""
        if not pending:
            return
        values = torch.stack([loss for _, loss in pending]).tolist()
        for (i, _), value in zip(pending, values, strict=True):
            if not math.isfinite(value):
                self._diverged(epoch, i, value)
        pending.clear()

    def _swap_unknown(self, x_cat: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Teach the "unknown" row: a small random fraction of known codes becomes UNKNOWN each batch."""
        p = self.config.unknown_swap_prob
        if p <= 0 or x_cat.numel() == 0:
            return x_cat
        mask = torch.rand(x_cat.shape, generator=gen, device=x_cat.device) < p
        mask &= x_cat >= N_RESERVED
        return x_cat.masked_fill(mask, UNKNOWN)

    def train_step(self, batch: TensorData, lr: float | None = None) -> torch.Tensor:
        """One optimisation step on ``batch`` (forward, loss, backward, gradient clipping, optimizer
        step); returns the batch's loss, detached and still on the device.

        ``lr`` None: at the one-cycle schedule's rate and momentum for ``global_step`` (what ``fit``
        does); a number: at that rate, the momentum left as the optimizer holds it (what the LR finder
        does). Needs ``trainer.optimizer``: ``fit`` makes it, or assign one from :meth:`new_optimizer`.
        """
        if self.optimizer is None:
            raise RuntimeError("train_step needs an optimizer: call fit, or set trainer.optimizer first")
        if lr is not None:
            set_hyper(self.optimizer, lr)
        else:
            assert self.schedule is not None
            step = self.global_step
            set_hyper(self.optimizer, self.schedule.lr(step), self.schedule.momentum(step))
        _retain_freed_memory()
        net = self._net if self._net is not None else self.model
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = net(batch.x_cat, batch.x_cont)
        loss = loss_fn(self.task, out, batch.y, batch.w, self.model.y_std)  # type: ignore[arg-type]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer.optimizers[0])
        else:
            loss.backward()
        if self.config.grad_clip:
            # every parameter but the lazily updated tables (their rows' gradients are not one vector)
            lazy = {id(e.weight) for e in self.model.lazy_embeddings()}
            dense = [p for p in self.model.parameters() if p.grad is not None and id(p) not in lazy]
            torch.nn.utils.clip_grad_norm_(dense, self.config.grad_clip)
        if self.scaler is not None:
            for opt in self.optimizer.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ---- weights in memory ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights and buffers in memory (on its device), for :meth:`restore`."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        """Put weights and buffers taken by :meth:`snapshot` back into the model."""
        self.model.load_state_dict(state)

    # ---- guards --------------------------------------------------------------------------------
    def _diverged(self, epoch: int, batch: int, value: float) -> None:
        kept = "no checkpoint directory was configured"
        if self._last_good_state is not None:
            self.restore(self._last_good_state)
            kept = "the model holds the weights from the start of this epoch"
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            kept += f"; the last good checkpoint is kept at {self.checkpoint_path}"
        raise TrainingDivergedError(
            f"training loss became {value} at epoch {epoch + 1}, batch {batch + 1}; {kept}. "
            "Lower the learning rate (see lr_find), set grad_clip, or check the inputs for extreme values."
        )

    def _handle_oom(self, epoch: int, exc: BaseException) -> None:
        assert self._last_good_state is not None
        new_bs = max(1, self.batch_size // 2)
        log.warning(
            "CUDA out of memory at batch size %d (%s); retrying epoch %d with batch size %d",
            self.batch_size,
            str(exc).splitlines()[0],
            epoch + 1,
            new_bs,
        )
        self.restore(self._last_good_state)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.batch_size = new_bs
        self._make_schedule()

    # ---- validation & early stopping -----------------------------------------------------------
    @torch.no_grad()
    def predict_tensors(self, data: TensorData) -> np.ndarray:
        self.model.eval()
        outs = []
        for start in range(0, len(data), self.config.eval_batch_size):
            sl = slice(start, start + self.config.eval_batch_size)
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                out = self.model(data.x_cat[sl], data.x_cont[sl])
            outs.append(to_prediction(self.task, out).float().cpu())
        return torch.cat(outs).numpy() if outs else np.empty(0, dtype=np.float32)

    def _validate_epoch(self) -> dict[str, float]:
        """:meth:`validate`; under DDP rank 0 validates and every rank gets its numbers, so that the
        best epoch and early stopping are decided identically everywhere."""
        if not self.is_distributed:
            return self.validate()
        # each rank's last steps updated its batch-norm statistics on its own shard: take rank 0's, so
        # that every rank holds the same model (the one that is validated, kept as best and saved)
        distributed.broadcast_buffers(self.model)
        distributed.check_same_weights(self.model, self.device)
        return distributed.run_on_main(self.validate)

    def validate(self) -> dict[str, float]:
        if self._valid is None or self._valid.y is None or len(self._valid) == 0:
            return {}
        pred = self.predict_tensors(self._valid)
        w = None if self._valid.w is None else self._valid.w.cpu().numpy()
        y = self._valid.y.cpu().numpy()
        m = task_metrics(self.task, y, pred, w, self.model.config.n_classes)
        undefined = [f"valid_{k}" for k, v in m.items() if not math.isfinite(v)]
        if undefined and not self._warned_undefined:
            self._warned_undefined = True
            why = (
                f"its {len(y)} row(s) hold a single class"
                if self.task != "regression" and len(np.unique(y)) < 2
                else f"it has {len(y)} row(s)"
            )
            log.warning(
                "validation metric(s) %s are undefined (NaN) on the validation data: %s. The best epoch "
                "and early stopping then follow the defined metrics only; give the validation data more "
                "rows (and both classes) for a meaningful score",
                ", ".join(undefined),
                why,
            )
        return {f"valid_{k}": v for k, v in m.items()}

    @property
    def monitor(self) -> tuple[str, str]:
        name, mode = MONITOR[self.task]
        if self.config.monitor:
            name = self.config.monitor
            mode = "max" if name in ("auc", "accuracy") else "min"
        return f"valid_{name.removeprefix('valid_')}", mode

    def _update_best(self, epoch: int, logs: dict[str, Any]) -> None:
        key, mode = self.monitor
        score = logs.get(key)
        if score is None or not math.isfinite(score):
            return
        best = self.history.best_score
        if best is None or (score < best if mode == "min" else score > best):
            self.history.best_score = float(score)
            self.history.best_epoch = epoch
            if self.config.restore_best:
                self._best_state = self.snapshot()

    def _should_stop_early(self, epoch: int) -> bool:
        p = self.config.early_stopping_patience
        if p is None or self.history.best_epoch is None:
            return False
        return epoch - self.history.best_epoch >= p

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path, next_epoch: int) -> Path:
        """Write model, optimizer, progress and history atomically (temp file + rename)."""
        assert self.optimizer is not None
        state = {
            "version": CHECKPOINT_VERSION,
            "next_epoch": next_epoch,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "lr_max": self.lr_max,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history.to_dict(),
            "best_state": self._best_state,
            "architecture": self.model.architecture(),
            "train_config": self.config.to_dict(),
            "world_size": self._world,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        self.callbacks.notify("on_checkpoint", self, str(path))
        return Path(path)

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore the state written by :meth:`save_checkpoint`; returns the epoch to continue from."""
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        # under DDP only rank 0 needs the file: it reads it and hands the state to the other ranks
        state = distributed.run_on_main(lambda: read_checkpoint(path))
        self.model.load_state_dict(state["model"])
        saved_cfg = (state.get("architecture") or {}).get("config") or {}
        if self.task == "regression":
            # the target scale lives in the config, not in the weights: take the checkpoint's, none
            # included (a checkpoint from before standardisation, or with standardize_target=False)
            self.model.set_target_scale(saved_cfg.get("y_mean"), saved_cfg.get("y_std"))
        self.batch_size = int(state["batch_size"])
        # the config's epochs when set, else the run's own (or the rule, for the checkpoint's batch size)
        saved_epochs = state.get("epochs") or (state.get("train_config") or {}).get("epochs")
        self.epochs = int(
            self.config.epochs or saved_epochs or auto_epochs(max(1, self._n_local), self.batch_size)
        )
        self.lr_max = float(state["lr_max"])
        self.optimizer = self.new_optimizer(self.lr_max)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError:
            # a checkpoint whose optimizer layout differs from this run's (written before the lazy
            # tables were updated lazily under DDP too, or with other sparse_embeddings): the weights,
            # the schedule's position and the history carry over; Adam's moment estimates start again
            self.optimizer = self.new_optimizer(self.lr_max)
            if self._rank == 0:
                log.warning(
                    "the optimizer state in %s does not fit this run (written by %s process(es)); "
                    "continuing with fresh Adam moments",
                    path,
                    state.get("world_size", 1),
                )
        self._make_schedule()
        self.history = History.from_dict(state["history"])
        self._best_state = state.get("best_state")
        return int(state["next_epoch"])


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only``: tensors and plain containers, never arbitrary objects)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise FormatError(f"checkpoint {path} is damaged or not an embedkit checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise FormatError(f"checkpoint {path} has an unsupported format version {state.get('version')!r}")
    return state
