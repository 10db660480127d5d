"""Callbacks: hooks the trainer calls at named events. Other parts (MLflow logging) plug in here."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lr_finder import LRFinderResult
    from .trainer import Trainer

log = logging.getLogger("embedkit")


class Callback:
    """Base class: override the events you need. ``trainer.stop_training = True`` ends training."""

    def on_lr_found(self, trainer: Trainer, lr: float, finder: LRFinderResult | None) -> None:
        """The peak rate ``lr`` of a fresh fit was chosen (by ``Learner.fit``, before training begins);
        ``finder`` is the LR finder's sweep behind it, or None when the rate was given and none ran."""

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_checkpoint(self, trainer: Trainer, path: str) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over each epoch's batches showing the running loss, then one log line per epoch
    (``logging.getLogger("embedkit")`` at INFO; with ``print_epochs`` also written to ``file``)."""

    def __init__(self, file: Any = None, disable: bool | None = None, print_epochs: bool = False) -> None:
        self.file = file
        self.disable = disable
        self.print_epochs = print_epochs
        self._bar: Any = None

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=trainer.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{trainer.epochs}",
            file=self.file or sys.stderr,
            leave=False,
            disable=self.disable,
            unit="batch",
        )

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if step % 20 == 0:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        # a learning rate is shown as 1.2e-04 (a fixed 4 decimals printed "lr 0.0000" for small rates)
        shown = ", ".join(
            f"{k} {v:.2e}" if k == "lr" else f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float)
        )
        log.info("epoch %d/%d: %s", epoch + 1, trainer.epochs, shown)
        if self.print_epochs:
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {epoch + 1}/{trainer.epochs}: {shown}", file=self.file or sys.stderr)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def notify(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)
