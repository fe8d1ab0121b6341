"""Audio file reading: any format libsndfile reads, mixed to mono and resampled to 16 kHz with soxr."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sota.utils.cpus import usable_cpus

SAMPLE_RATE = 16_000


class BadAudioFile(ValueError):
    """An audio file that is missing, unreadable, truncated, empty, silent or not finite; the message names the
    file."""


def _truncated_wav(path: Path) -> str | None:
    """Why a RIFF/WAVE file holds less audio than its header declares, else None. libsndfile reads what is there
    without complaint, so a clip cut by an interrupted copy would be scored against its full transcript."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            declared = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                have = size - f.tell()
                # 0 and 0xFFFFFFFF: written by streaming encoders that never went back to fill the size in
                if declared not in (0, 0xFFFFFFFF) and have < declared:
                    return f"{have} of the {declared} bytes of audio its header declares"
                return None
            f.seek(declared + (declared & 1), 1)


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
    truncated = _truncated_wav(path)
    if truncated:
        raise BadAudioFile(f"audio file is truncated: {path} holds {truncated}")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise BadAudioFile(f"audio file holds {bad} NaN/Inf samples: {path}")
    if not np.any(audio):
        raise BadAudioFile(f"audio file is silent (every sample is zero): {path}")
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return audio


def read_clips(paths: Sequence[str | Path], workers: int | None = None) -> list[np.ndarray | BadAudioFile]:
    """`load_audio` of each path, in order: its audio, or the error that makes it unusable. A pool of threads
    reads them (by default one for each core the process may use, at most 16): libsndfile, numpy and soxr release
    the GIL for the bulk of a clip, and a training split holds thousands."""
    def one(path: str | Path) -> np.ndarray | BadAudioFile:
        try:
            return load_audio(path)
        except BadAudioFile as err:
            return err

    workers = workers or min(16, usable_cpus())
    if workers == 1 or len(paths) < 2:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audio") as pool:
        return list(pool.map(one, paths))
