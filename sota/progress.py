"""The training progress bar, counted in optimizer steps when training is bounded by `trainer.max_steps`.

Lightning's default bar counts batches of the current epoch and labels it "Epoch N/max_epochs-1", which reads
"Epoch 6/-2" when max_epochs is unset (-1), as in every preset here. Training by steps, one bar over the whole fit
shows the optimizer step out of max_steps instead.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

DESCRIPTION = "Training steps"


def _by_steps(trainer: L.Trainer) -> bool:
    return trainer.max_steps is not None and trainer.max_steps > 0 and trainer.max_epochs in (None, -1)


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar; when training by steps, one task of `global_step / max_steps` across epochs."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if _by_steps(self.trainer) else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not _by_steps(self.trainer):
            return super()._get_train_description(current_epoch)
        # padded like Lightning's, so that the bar does not shift when the validation bar appears
        return f"{DESCRIPTION:{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not _by_steps(trainer):
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # once per fit: later epochs continue the same task
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)  # a resumed run starts part-way

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:  # resumed mid-epoch
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()


class StepTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, with the same step count, where rich is not installed."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if _by_steps(self.trainer) else super().total_train_batches

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not _by_steps(trainer):
            return super().on_train_epoch_start(trainer, *args)
        if self.train_progress_bar.total != trainer.max_steps:  # once per fit: later epochs continue it
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.set_description(DESCRIPTION)
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not _by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = trainer.global_step
        if self._should_update(n, self.train_progress_bar.total):
            self.train_progress_bar.n = n
            self.train_progress_bar.refresh()
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def progress_bars(trainer_cfg: Any) -> list[ProgressBar]:
    """The progress bar callback for a Trainer built from `trainer_cfg`: none where the bar is disabled, since
    Lightning refuses a progress bar callback together with `enable_progress_bar: false`."""
    if not trainer_cfg.get("enable_progress_bar", True):
        return []
    return [StepProgressBar() if _RICH_AVAILABLE else StepTQDMProgressBar()]
