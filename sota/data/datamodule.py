"""LightningDataModule over SALMONN-style manifests: audio is read once, and encoder outputs are cached when
the encoder is frozen so training touches only the connector and the LLM."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from sota.data.audio import SAMPLE_RATE, BadAudioFile, read_clips
from sota.data.features import cache_key, cached_encode
from sota.data import real_speech
from sota.data.manifest import Sample, on_bad_file_problem, read_manifest
from sota.data.featurizer import Featurizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REAL = "real"  # the real-speech test set (data.real_test), scored beside the test split


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
        weights: Mapping[str, float] | None = None,
        real_test: str | None = real_speech.BUILTIN,
        **_: Any,
    ) -> None:
        super().__init__()
        problem = on_bad_file_problem(on_bad_file)
        if problem:
            raise ValueError(problem)
        self.source, self.root, self.tasks = source, Path(root), list(tasks)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.on_bad_file, self.num_workers = on_bad_file, num_workers
        self.cache_features, self.max_eval_samples = cache_features, max_eval_samples
        self.weights = _check_weights(weights)
        self.real_test = real_test
        self.real_note: str | None = None
        # Clips longer than the encoder context, per split: encoded in chunks (said in the log and results).
        self.chunked: dict[str, int] = {}
        self.skipped: list[str] = []
        self._manifests: dict[str, Path] | None = None
        self._samples: dict[str, list[Sample]] = {}
        self.datasets: dict[str, ClipDataset] = {}
        self.encoder: Featurizer | None = None
        self.encoder_fingerprint = ""

    # -- manifests and samples (cheap: text only) --------------------------------------------------
    def manifests(self) -> dict[str, Path]:
        if self._manifests is None:
            manifests = {k: Path(v) for k, v in self.source(root=self.root).items()}
            real, self.real_note = real_speech.resolve(self.real_test, self.root.parent / "real")
            if real is not None:
                manifests[REAL] = real
            elif self.real_note:
                log.warning("real-speech evaluation: %s", self.real_note)
            self._manifests = manifests
        return self._manifests

    def has_real(self) -> bool:
        return REAL in self.manifests()

    def speakers(self) -> list[str]:
        """Distinct speaker ids of the training split's speech (rows that record a `speaker`)."""
        return sorted({str(s.extra["speaker"]) for s in self.samples("train") if s.extra.get("speaker")})

    def samples(self, split: str) -> list[Sample]:
        if split not in self._samples:
            manifests = self.manifests()
            if split not in manifests:
                raise KeyError(f"data source has no {split!r} split; it has {sorted(manifests)}")
            # A test split may be unlabelled (transcribe only: predictions, no scores); training needs targets.
            rows = read_manifest(manifests[split], self.on_bad_file, self.tasks, self.skipped,
                                 unlabelled=split in ("test", REAL))
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
    def attach_encoder(self, encoder: Featurizer, fingerprint: str, device: str | torch.device = "cpu") -> None:
        """Features come from this encoder; with a frozen encoder they are computed once and cached."""
        self.encoder, self.encoder_fingerprint, self.device = encoder, fingerprint, device

    def _load(self, split: str) -> ClipDataset:
        samples, waves = [], []
        rows = self.samples(split)
        for s, wave in zip(rows, read_clips([s.path for s in rows])):
            if isinstance(wave, BadAudioFile):
                if self.on_bad_file == "error":
                    raise BadAudioFile(f"{wave} (split {split}; set data.on_bad_file=skip to skip it)") from None
                log.warning("skipping: %s", wave)
                self.skipped.append(str(wave))
                continue
            samples.append(s)
            waves.append(wave)
        if not samples:
            raise ValueError(f"split {split!r}: every audio file was unusable")
        features = None
        if self.encoder is not None:
            long = sum(self.encoder.chunks_for(len(w)) > 1 for w in waves)
            if long:
                self.chunked[split] = long
                log.warning("%d of %d clips of split %s are longer than the encoder context (%g s): each is encoded "
                            "in consecutive %g s chunks", long, len(waves), split, self.encoder.context_s,
                            self.encoder.context_s)
        if self.encoder is not None and self.encoder.frozen and self.cache_features:
            key = cache_key(self.encoder_fingerprint, [s.id for s in samples], [s.path for s in samples])
            features = cached_encode(self.encoder, waves, key, self.root / "features", device=self.device,
                                     desc=f"encode {split}")
        return ClipDataset(samples, waves, features)

    def load_splits(self, splits: Sequence[str]) -> dict[str, Any]:
        """Read every clip of these splits now (missing, unreadable, truncated, silent or non-finite audio is an
        error or a counted skip per `on_bad_file`), so a bad test file stops a run before training, not after
        it. Returns clips, seconds and the manifest per split, also logged (the manifest lets a review page
        find each answered clip's audio: `sweep.py review`)."""
        for split in splits:
            if split not in self.datasets:
                self.datasets[split] = self._load(split)
        summary: dict[str, Any] = {
            split: {"clips": len(self.datasets[split]),
                    "seconds": round(sum(len(w) for w in self.datasets[split].waves) / SAMPLE_RATE, 1),
                    "manifest": str(self.manifests()[split])}
            for split in splits}
        summary["skipped"] = len(self.skipped)
        log.info("inputs checked: %s; %d skipped%s", ", ".join(
            f"{split} {summary[split]['clips']} clips ({summary[split]['seconds']:.0f} s)" for split in splits),
            len(self.skipped), f" (first: {self.skipped[0]})" if self.skipped else "")
        return summary

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  REAL: (REAL,)}.get(stage or "", SPLITS)
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

    def _loader(self, split: str, batch_size: int, shuffle: bool, sampler: Sampler | None = None) -> DataLoader:
        self.setup({"train": "fit", "val": "validate", "test": "test", REAL: REAL}[split])
        # Training drops the last partial batch (steady step sizes), except where the split is smaller than one
        # batch: dropping it would leave no training step at all.
        drop_last = shuffle and len(self.datasets[split]) >= batch_size
        if shuffle and not drop_last:
            log.warning("the %s split has %d samples, fewer than data.batch_size=%d: each training step uses "
                        "all of them", split, len(self.datasets[split]), batch_size)
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers, drop_last=drop_last)

    def train_sampler(self) -> WeightedRandomSampler | None:
        """With `weights`, a sampler that draws each task (or source) of the train set in those proportions,
        as many draws per epoch as the set has clips; None (plain shuffling) without weights."""
        if not self.weights:
            return None
        if "train" not in self.datasets:
            self.datasets["train"] = self._load("train")
        samples = self.datasets["train"].samples
        return WeightedRandomSampler(sample_weights(samples, self.weights), num_samples=len(samples),
                                     replacement=True)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True, sampler=self.train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def real_dataloader(self) -> DataLoader:
        return self._loader(REAL, self.eval_batch_size, shuffle=False)


def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float] | None:
    if not weights:
        return None
    out = {}
    for key, w in weights.items():
        try:
            out[str(key)] = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"data.weights.{key} must be a number >= 0, got {w!r}") from None
        if not out[str(key)] >= 0:
            raise ValueError(f"data.weights.{key} must be a number >= 0, got {w!r}")
    return out


def sample_weights(samples: list[Sample], weights: Mapping[str, float]) -> torch.Tensor:
    """Per-sample weights that give each group (a task, or a source of `sota.data.sources.mix`) the share
    `weights[group]` of the draws, whatever its size. Keys are all tasks or all source names."""
    tasks = {s.task for s in samples}
    sources = {s.extra.get("source") for s in samples} - {None}
    keys = set(weights)
    if keys & tasks and keys & sources:
        raise ValueError(f"data.weights mixes tasks ({sorted(keys & tasks)}) and sources ({sorted(keys & sources)}); "
                         "weight either the tasks or the sources")
    if keys & tasks:
        field, groups = "task", [s.task for s in samples]
    elif keys & sources:
        field, groups = "source", [s.extra.get("source") for s in samples]
    else:
        raise ValueError(f"data.weights keys {sorted(keys)} name neither a task of the train set "
                         f"({sorted(tasks)}) nor a source ({sorted(sources) or 'none: use sota.data.sources.mix'})")
    counts: dict[Any, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    unweighted = sorted(str(g) for g in counts if g not in weights)
    if unweighted:
        raise ValueError(f"data.weights gives no weight to {field} {', '.join(unweighted)} of the train set; "
                         f"give every {field} a weight (0 to leave it out)")
    absent = sorted(k for k in keys if k not in counts)
    if absent:
        log.warning("data.weights: no train samples for %s %s; their weight is ignored", field, ", ".join(absent))
    total = sum(weights[g] for g in counts)
    if total <= 0:
        raise ValueError(f"data.weights: the weights of the train set's {field}s sum to 0")
    log.info("train sampling by %s: %s", field,
             ", ".join(f"{g} {weights[g] / total:.2f} of draws ({n} clips)" for g, n in sorted(counts.items())))
    return torch.tensor([weights[g] / counts[g] for g in groups], dtype=torch.double)


def _per_task_head(rows: list[Sample], n: int) -> list[Sample]:
    out, seen = [], {}
    for s in rows:
        if seen.get(s.task, 0) < n:
            out.append(s)
            seen[s.task] = seen.get(s.task, 0) + 1
    return out
