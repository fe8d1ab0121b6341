"""Training throughput over the steady part of `fit`: setup, feature caching, the first steps (allocator and
kernel warm-up) and validation are left out, so the figure compares devices and strategies fairly."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class TrainThroughput(L.Callback):
    """Optimizer steps and samples per second between the end of step `skip` and the end of the last step.

    Samples are counted on this process and multiplied by the world size (DDP gives every process the same
    batch size). The device is synchronised only at the two ends of the window.
    """

    def __init__(self, skip: int = 10) -> None:
        self.skip = skip
        self.t0: float | None = None
        self.steps = self.samples = 0
        self.elapsed = 0.0
        self._val_t0: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_steps > 0:  # short runs still get a window
            self.skip = min(self.skip, trainer.max_steps // 5)

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step < self.skip:
            return
        if self.t0 is None:
            self.t0 = self._now(trainer)
            return
        self.steps += 1
        self.samples += len(batch["tasks"]) * trainer.world_size

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.t0 is not None:
            self._val_t0 = self._now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_t0 is not None and self.t0 is not None:
            self.t0 += self._now(trainer) - self._val_t0  # validation is not training time
            self._val_t0 = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.t0 is not None and self.steps:
            self.elapsed = self._now(trainer) - self.t0

    def summary(self) -> dict[str, float | int | None]:
        """`train_steps_per_s`, `train_samples_per_s` (global) and the steps they were measured over."""
        if not self.elapsed:
            return {"train_steps_per_s": None, "train_samples_per_s": None, "throughput_steps": self.steps}
        return {"train_steps_per_s": self.steps / self.elapsed, "train_samples_per_s": self.samples / self.elapsed,
                "throughput_steps": self.steps}
