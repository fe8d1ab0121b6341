"""Runs that survive being stopped: `last.ckpt` written atomically every few steps and when a signal arrives
(SIGTERM from a scheduler's preemption, SIGINT from Ctrl+C, SIGUSR1 from SLURM's warning), and a signal turned
into `Interrupted`, so the run records `status: interrupted` and exits with 128 + the signal's number.

During training a signal only raises a flag: the step in flight finishes, the checkpoint is saved at its end,
then the run stops. Outside training (data, evaluation, measurement) the signal stops the run at once."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(Exception):
    """The run was stopped by a signal (an Exception, so Lightning runs its teardown and callbacks' on_exception)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}{detail}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignalState:
    """What the handler knows: whether training is running (stop at the next step) and the signal received."""

    def __init__(self) -> None:
        self.training = False
        self.signum: int | None = None


@contextmanager
def interruptible() -> Iterator[SignalState]:
    """Install the handlers for the body of a run (main thread only; elsewhere signals keep their handlers)."""
    state = SignalState()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, _frame: Any) -> None:
        if state.signum is None:
            state.signum = signum
        if not state.training:
            raise Interrupted(signum)
        log.warning("%s received: training stops after this step, with a checkpoint",
                    signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """A checkpoint a kill -9 cannot leave half-written: saved beside its place, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)  # optimizer and loop state too: training continues from it
    if trainer.is_global_zero:
        os.replace(tmp, path)


class ResumableCheckpoint(L.Callback):
    """`last.ckpt` every `every_n_steps` optimizer steps, at the end of training, and when a signal stops it."""

    def __init__(self, path: Path, every_n_steps: int | None, state: SignalState) -> None:
        self.path, self.every, self.state = Path(path), every_n_steps, state
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved_step:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(trainer, self.path)
        self._saved_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run does not rewrite the checkpoint it started from
        self.state.training = True

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if self.state.signum is not None:
            self._save(trainer)
            raise Interrupted(self.state.signum, f" at step {step}; checkpoint {self.path}")
        if (self.every and step % self.every == 0) or (trainer.max_steps > 0 and step >= trainer.max_steps):
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)
        self.state.training = False
        if self.state.signum is not None:  # arrived during the final validation: the run still stops here
            raise Interrupted(self.state.signum, f" at the end of training; checkpoint {self.path}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning's own SIGTERM check can fire between this callback's hook and the next step.
        if self.state.training and self.state.signum is not None:
            try:
                self._save(trainer)
            except Exception as err:  # the interruption is reported either way
                log.warning("could not save %s on interruption: %s", self.path, err)
        self.state.training = False
