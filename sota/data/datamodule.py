"""LightningDataModule over SALMONN-style manifests: audio is read once, and encoder outputs are cached when
the encoder is frozen so training touches only the connector and the LLM."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sota.data.audio import BadAudioFile, load_audio
from sota.data.features import cache_key, cached_encode
from sota.data.manifest import ON_BAD_FILE, Sample, read_manifest
from sota.models.encoder import AudioEncoder

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class ClipDataset(Dataset):
    """Samples with either cached encoder features or raw waveforms."""

    def __init__(self, samples: list[Sample], waves: list[np.ndarray], features: torch.Tensor | None) -> None:
        self.samples, self.waves, self.features = samples, waves, features

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"sample": self.samples[i], "num_samples": len(self.waves[i])}
        if self.features is not None:
            item["features"] = self.features[i]
        else:
            item["wave"] = self.waves[i]
        return item


class AudioDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: Callable[..., dict[str, Path]],
        root: str,
        tasks: list[str],
        batch_size: int = 32,
        eval_batch_size: int = 64,
        on_bad_file: str = "error",
        num_workers: int = 0,
        cache_features: bool = True,
        max_eval_samples: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        if on_bad_file not in ON_BAD_FILE:
            raise ValueError(f"data.on_bad_file must be one of {ON_BAD_FILE}, got {on_bad_file!r}")
        self.source, self.root, self.tasks = source, Path(root), list(tasks)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.on_bad_file, self.num_workers = on_bad_file, num_workers
        self.cache_features, self.max_eval_samples = cache_features, max_eval_samples
        self.skipped: list[str] = []
        self._manifests: dict[str, Path] | None = None
        self._samples: dict[str, list[Sample]] = {}
        self.datasets: dict[str, ClipDataset] = {}
        self.encoder: AudioEncoder | None = None
        self.encoder_fingerprint = ""

    # -- manifests and samples (cheap: text only) --------------------------------------------------
    def manifests(self) -> dict[str, Path]:
        if self._manifests is None:
            self._manifests = {k: Path(v) for k, v in self.source(root=self.root).items()}
        return self._manifests

    def samples(self, split: str) -> list[Sample]:
        if split not in self._samples:
            manifests = self.manifests()
            if split not in manifests:
                raise KeyError(f"data source has no {split!r} split; it has {sorted(manifests)}")
            rows = read_manifest(manifests[split], self.on_bad_file, self.tasks, self.skipped)
            if split != "train" and self.max_eval_samples:
                rows = _per_task_head(rows, self.max_eval_samples)
            if not rows:
                raise ValueError(f"{manifests[split]}: no usable rows for tasks {self.tasks}")
            self._samples[split] = rows
        return self._samples[split]

    def vocabulary(self) -> set[str]:
        """Words of the training transcripts and captions (the tiny LLMs' closed vocabulary)."""
        words: set[str] = set()
        for s in self.samples("train"):
            for text in (s.text, *s.references):
                words.update(text.split())
        return words

    # -- audio and features ---------------------------------------------------------------------------
    def attach_encoder(self, encoder: AudioEncoder, fingerprint: str, device: str | torch.device = "cpu") -> None:
        """Features come from this encoder; with a frozen encoder they are computed once and cached."""
        self.encoder, self.encoder_fingerprint, self.device = encoder, fingerprint, device

    def _load(self, split: str) -> ClipDataset:
        samples, waves = [], []
        for s in self.samples(split):
            try:
                waves.append(load_audio(s.path))
            except BadAudioFile as err:
                if self.on_bad_file == "error":
                    raise BadAudioFile(f"{err} (split {split}; set data.on_bad_file=skip to skip it)") from None
                log.warning("skipping: %s", err)
                self.skipped.append(str(err))
                continue
            samples.append(s)
        if not samples:
            raise ValueError(f"split {split!r}: every audio file was unusable")
        features = None
        if self.encoder is not None and self.encoder.frozen and self.cache_features:
            key = cache_key(self.encoder_fingerprint, [s.id for s in samples], [s.path for s in samples])
            features = cached_encode(self.encoder, waves, key, self.root / "features", device=self.device,
                                     desc=f"encode {split}")
        return ClipDataset(samples, waves, features)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self._load(split)

    # -- batches --------------------------------------------------------------------------------------
    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        samples = [it["sample"] for it in items]
        assert self.encoder is not None, "attach_encoder() before building batches"
        batch: dict[str, Any] = {
            "ids": [s.id for s in samples],
            "tasks": [s.task for s in samples],
            "answers": [s.text for s in samples],
            "references": [list(s.targets) for s in samples],
            "num_frames": self.encoder.frames_for([it["num_samples"] for it in items]),
        }
        if "features" in items[0]:
            batch["features"] = torch.stack([it["features"] for it in items])
        else:
            batch["encoder_inputs"] = self.encoder.featurize([it["wave"] for it in items])
        return batch

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle, collate_fn=self.collate,
                          num_workers=self.num_workers, drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)


def _per_task_head(rows: list[Sample], n: int) -> list[Sample]:
    out, seen = [], {}
    for s in rows:
        if seen.get(s.task, 0) < n:
            out.append(s)
            seen[s.task] = seen.get(s.task, 0) + 1
    return out
