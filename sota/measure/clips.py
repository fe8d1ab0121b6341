"""The batch-1 clips latency is measured on: the protocol's seeded noise clip and real test clips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from sota.models.audio_llm import AudioLLM

SAMPLE_RATE = 16_000


@dataclass
class Clip:
    """A batch-1 input: a waveform (featurized inside the timed loop) or ready encoder inputs."""

    task: str
    seconds: float                              # audio the encoder hears
    wave: np.ndarray | None = None
    encoder_inputs: dict[str, torch.Tensor] | None = None
    num_frames: torch.Tensor | None = None


def noise_clip(model: AudioLLM, seconds: float, task: str, seed: int = 0) -> Clip:
    """The protocol's clip: `seconds` of seeded Gaussian noise (std 0.1)."""
    n = int(round(seconds * SAMPLE_RATE))
    wave = (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)
    return _wave_clip(model, wave, task)


def _wave_clip(model: AudioLLM, wave: np.ndarray, task: str) -> Clip:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    return Clip(task=task, seconds=len(wave) / SAMPLE_RATE, wave=wave)


def real_clips(dataset: Any, n: int) -> list[dict[str, Any]]:
    """`n` clips spread evenly over a dataset with `samples` and `waves` (e.g. the datamodule's test split),
    as `measure`'s `real_batches`: ``[{"wave": ..., "task": ..., "id": ...}]``."""
    total = len(dataset.samples)
    if n <= 0 or total == 0:
        return []
    picks = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total)).round()})
    return [{"wave": dataset.waves[i], "task": dataset.samples[i].task, "id": dataset.samples[i].id} for i in picks]


def clips_from_batches(model: AudioLLM, batches: Iterable[Mapping[str, Any]] | None) -> list[Clip]:
    """Batch-1 clips from `real_batches`: dicts with `wave`/`waves` (preferred) or `encoder_inputs` and
    `num_frames` (collate's output for an uncached encoder); rows of larger batches become separate clips.
    Batches holding only cached `features` are refused: the encoder must run in the timed region."""
    clips: list[Clip] = []
    for b in batches or []:
        tasks = list(b.get("tasks") or ([b["task"]] if "task" in b else []))
        if "wave" in b or "waves" in b:
            waves = [b["wave"]] if "wave" in b else list(b["waves"])
            tasks = tasks or [model.tasks[0]] * len(waves)
            clips += [_wave_clip(model, w, t) for w, t in zip(waves, tasks)]
        elif "encoder_inputs" in b:
            frames = torch.as_tensor(b["num_frames"])
            tasks = tasks or [model.tasks[0]] * len(frames)
            for i in range(len(frames)):
                inputs = {k: v[i:i + 1] for k, v in b["encoder_inputs"].items()}
                seconds = float(frames[i]) / model.encoder.frames_per_second
                clips.append(Clip(task=tasks[i], seconds=seconds, encoder_inputs=inputs,
                                  num_frames=frames[i:i + 1]))
        elif "features" in b:
            raise ValueError("real_batches hold cached encoder `features`, but the encoder must run in the timed "
                             "region: pass waveforms instead, e.g. sota.measure.clips.real_clips(test_dataset, n) "
                             "-> [{'wave': ..., 'task': ...}]")
        else:
            raise ValueError(f"a real batch needs `wave`/`waves` or `encoder_inputs`; got keys {sorted(b)}")
    return clips
