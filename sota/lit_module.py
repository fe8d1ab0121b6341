"""LightningModule around `AudioLLM`: LM loss for training, batched generation and scoring for
validation/test. Checkpoints keep only trainable tensors; frozen parts are rebuilt from the config."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from sota.compress import lowrank
from sota.compress.distill import Distiller
from sota.metrics.scoring import score_predictions
from sota.models import sharding
from sota.models.agreement import Agreement
from sota.models.audio_llm import AudioLLM
from sota.models.encoder import SAMPLE_RATE
from sota.param_groups import split as split_param_groups


class AudioLLMModule(L.LightningModule):
    def __init__(self, model: AudioLLM, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, generate: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None, vocabulary: list[str] | None = None,
                 compression: dict[str, Any] | None = None, audio: dict[str, Any] | None = None,
                 distiller: Distiller | None = None, param_groups: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.model = model
        # recover=distill: the frozen teacher and the loss weights (not a submodule: no state_dict, no optimizer).
        self.distiller = distiller
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.param_groups = list(param_groups or [])
        # The learning rate each parameter group trains at (sota.param_groups), set by configure_optimizers.
        self.param_group_record: list[dict[str, Any]] = []
        # trainer=fsdp: what configure_model sharded (sota.models.sharding)
        self.sharding: dict[str, Any] = {}
        self.generate_kwargs = dict(generate or {})
        # A second backend that decodes the test split too, for the agreement record (sota.models.agreement).
        self.compare_with: str | None = self.generate_kwargs.pop("compare_with", None)
        self.agreement: Agreement | None = None
        self.run_config = run_config or {}
        self.vocabulary = vocabulary or []
        self.compression = compression or {}
        # What the model was trained on: encoder context, answer tokens per second of speech (the token
        # budget), the training voices. Recorded in the checkpoint; evaluation follows it (checkpoint.recorded_audio).
        self.audio = dict(audio or {})
        # Which split a `trainer.test` call scores: the test split, or the real-speech set.
        self.test_split = "test"
        # Frozen weights are not in the checkpoint: they come back from the config on rebuild.
        self.strict_loading = False
        self.predictions: dict[str, list[dict[str, Any]]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}

    # -- training ---------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        # trainer=fsdp (Lightning's ModelParallelStrategy): FSDP2 units over the data-parallel ranks
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy) \
                and not self.sharding:
            self.sharding = sharding.shard(self.model, self.device_mesh["data_parallel"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        n = len(batch["tasks"])
        if self.distiller is None:
            loss = self.model(batch)
        else:
            loss, terms = self.distiller.loss(self.model, batch)
            for name, value in terms.items():
                self.log(f"train/{name}", value, batch_size=n)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def configure_optimizers(self) -> Any:
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError("nothing to train: every parameter is frozen")
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        groups, self.param_group_record = split_param_groups(self.named_parameters(), self.param_groups, base_lr)
        opt = self.optimizer_factory(params=groups)
        if self.scheduler_factory is None:
            return opt
        steps = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        sched = self.scheduler_factory(optimizer=opt, num_training_steps=int(steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- evaluation -------------------------------------------------------------------------------------
    def token_budget(self, batch: dict[str, Any]) -> int:
        """New tokens allowed for this batch: `generate.max_new_tokens`, raised for long clips to the answer
        tokens per second seen in training times the batch's longest clip, so long transcripts are not cut."""
        floor = int(self.generate_kwargs.get("max_new_tokens", 40))
        rate = float(self.audio.get("tokens_per_s") or 0.0)
        seconds = float(batch["num_frames"].max()) / self.model.encoder.frames_per_second
        return max(floor, math.ceil(rate * seconds))

    def _generate(self, batch: dict[str, Any], split: str) -> None:
        kwargs = {**self.generate_kwargs, "max_new_tokens": self.token_budget(batch)}
        answers = self.model.generate_ids(batch, **kwargs)
        preds = [self.model.prompt.decode(ids) for ids in answers]
        if split == "test" and self.agreement is not None:
            reference = self.model.generate_ids(batch, **{**kwargs, "backend": self.compare_with})
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

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and "train" in getattr(datamodule, "datasets", {}):
            self.audio["tokens_per_s"] = answer_tokens_per_s(self.model, datamodule.datasets["train"])
            self.audio["speakers"] = datamodule.speakers()

    def on_test_epoch_start(self) -> None:
        self.predictions[self.test_split] = []
        if self.compare_with is not None and self.test_split == "test":
            self.agreement = Agreement(self.generate_kwargs.get("backend", "eager"), self.compare_with)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._generate(batch, self.test_split)

    def on_test_epoch_end(self) -> None:
        self._score(self.test_split)

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Trainable tensors, and the frozen factors of a low-rank encoder: they come from calibration data, so
        # the config alone cannot rebuild them.
        kept = {n for n, p in self.named_parameters() if p.requires_grad} | lowrank.factor_names(self)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in kept}
        checkpoint["sota_config"] = self.run_config
        # Word-level tokenizers are rebuilt from this, so a checkpoint evaluates without its training corpus.
        checkpoint["sota_vocabulary"] = self.vocabulary
        # What pruning removed, so an evaluation rebuilds the same structure before loading the tensors.
        checkpoint["sota_compression"] = self.compression
        checkpoint["sota_audio"] = self.audio


# Headroom over the fastest speech seen in training: a slower-reading model must not be cut mid-sentence.
BUDGET_HEADROOM = 1.5


def answer_tokens_per_s(model: AudioLLM, dataset: Any) -> float:
    """Answer tokens per second of audio of the training set's fast speech (95th percentile over its speech
    clips), with headroom; 0 without speech clips (the budget is then `generate.max_new_tokens` alone)."""
    rates = [len(model.prompt.answer_ids(s.text)) / (len(w) / SAMPLE_RATE)
             for s, w in zip(dataset.samples, dataset.waves) if s.task == "asr" and len(w)]
    return round(float(np.percentile(rates, 95)) * BUDGET_HEADROOM, 3) if rates else 0.0
