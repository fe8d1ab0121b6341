"""Audio file reading: any format libsndfile reads, mixed to mono and resampled to 16 kHz with soxr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000


class BadAudioFile(ValueError):
    """An audio file that is missing, unreadable or empty; the message names the file."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise BadAudioFile(f"audio file not found: {path}")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile reports corrupt files with several exception types
        raise BadAudioFile(f"cannot read audio file {path}: {err}") from None
    if audio.size == 0:
        raise BadAudioFile(f"audio file is empty: {path}")
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return audio
