"""LightningModule around `AudioLLM`: LM loss for training, batched generation and scoring for
validation/test. Checkpoints keep only trainable tensors; frozen parts are rebuilt from the config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from sota.metrics.scoring import score_predictions
from sota.models.agreement import Agreement
from sota.models.audio_llm import AudioLLM


class AudioLLMModule(L.LightningModule):
    def __init__(self, model: AudioLLM, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, generate: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None, vocabulary: list[str] | None = None,
                 compression: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.generate_kwargs = dict(generate or {})
        # A second backend that decodes the test split too, for the agreement record (sota.models.agreement).
        self.compare_with: str | None = self.generate_kwargs.pop("compare_with", None)
        self.agreement: Agreement | None = None
        self.run_config = run_config or {}
        self.vocabulary = vocabulary or []
        self.compression = compression or {}
        # Frozen weights are not in the checkpoint: they come back from the config on rebuild.
        self.strict_loading = False
        self.predictions: dict[str, list[dict[str, Any]]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}

    # -- training ---------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["tasks"]))
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        opt = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return opt
        steps = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        sched = self.scheduler_factory(optimizer=opt, num_training_steps=int(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation -------------------------------------------------------------------------------------
    def _generate(self, batch: dict[str, Any], split: str) -> None:
        answers = self.model.generate_ids(batch, **self.generate_kwargs)
        preds = [self.model.prompt.decode(ids) for ids in answers]
        if split == "test" and self.agreement is not None:
            reference = self.model.generate_ids(batch, **{**self.generate_kwargs, "backend": self.compare_with})
            self.agreement.add(self.model, batch, reference, answers)
        rows = self.predictions.setdefault(split, [])
        for i, pred in enumerate(preds):
            rows.append({"id": batch["ids"][i], "task": batch["tasks"][i], "prediction": pred,
                         "references": batch["references"][i]})

    def _score(self, split: str) -> None:
        metrics = score_predictions(self.predictions.get(split, []))
        self.metrics[split] = metrics
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value is not None:
                self.log(f"{split}/{key}", float(value), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.predictions["val"] = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._generate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def on_test_epoch_start(self) -> None:
        self.predictions["test"] = []
        if self.compare_with is not None:
            self.agreement = Agreement(self.generate_kwargs.get("backend", "eager"), self.compare_with)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._generate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._score("test")

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["sota_config"] = self.run_config
        # Word-level tokenizers are rebuilt from this, so a checkpoint evaluates without its training corpus.
        checkpoint["sota_vocabulary"] = self.vocabulary
        # What pruning removed, so an evaluation rebuilds the same structure before loading the tensors.
        checkpoint["sota_compression"] = self.compression
