"""Seeded speech augmentation on float32 16 kHz arrays (speed, room reverb, telephone band, background noise),
so synthetic speech sounds more like the rooms and channels real recordings come from.

Every function takes a numpy Generator and returns a new float32 array in [-1, 1]; the same generator state
gives the same output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import soxr
from scipy import signal

__all__ = ["SAMPLE_RATE", "AugmentConfig", "speed_perturb", "reverb", "telephone", "add_noise", "augment",
           "room_impulse_response"]

SAMPLE_RATE = 16000
_PHONE_RATE = 8000
_PHONE_BAND_HZ = (300.0, 3400.0)  # the ITU-T G.712 voice channel
_MU = 255  # G.711 mu-law


def _limit(x: np.ndarray) -> np.ndarray:
    # Scale down rather than clip: clipping would add distortion nobody asked for.
    peak = float(np.max(np.abs(x), initial=0.0))
    return (x / peak if peak > 1.0 else x).astype(np.float32, copy=False)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0


def speed_perturb(audio: np.ndarray, rng: np.random.Generator,
                  factor_range: tuple[float, float] = (0.9, 1.1)) -> np.ndarray:
    """Play `audio` faster or slower by a factor drawn from `factor_range` (tempo and pitch together, as Kaldi's
    speed perturbation); the length becomes len/factor."""
    factor = float(rng.uniform(*factor_range))
    return _limit(soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE))


def room_impulse_response(rng: np.random.Generator, rt60_s: float, predelay_s: float = 0.004) -> np.ndarray:
    """Exponentially decaying Gaussian noise, 60 dB down after `rt60_s`, with unit energy (reverberant part only)."""
    n = int(rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # ln(10**3) = 6.91: the amplitude falls by 60 dB over rt60_s.
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)
    ir = np.concatenate([np.zeros(int(predelay_s * SAMPLE_RATE)), tail])
    return ir / np.sqrt(np.sum(ir**2))


def reverb(audio: np.ndarray, rng: np.random.Generator, rt60_range: tuple[float, float] = (0.2, 0.8),
           drr_db_range: tuple[float, float] = (0.0, 12.0)) -> np.ndarray:
    """Synthetic room: the dry signal plus a noise-tail reverberation with RT60 and direct-to-reverberant energy
    ratio (dB) drawn from the ranges; same length and RMS as the input (the tail past the end is cut)."""
    if audio.size == 0:
        return audio.astype(np.float32, copy=True)
    ir = room_impulse_response(rng, float(rng.uniform(*rt60_range)))
    drr_db = float(rng.uniform(*drr_db_range))
    wet = signal.fftconvolve(audio.astype(np.float64), ir)[: audio.size]
    out = audio + wet * 10 ** (-drr_db / 20)
    gain = np.sqrt(_power(audio) / max(_power(out), 1e-20))
    return _limit(out * gain)


def telephone(audio: np.ndarray, rng: np.random.Generator, mu_law_p: float = 0.5) -> np.ndarray:
    """A narrowband phone channel: 8 kHz, 300-3400 Hz band-pass, with probability `mu_law_p` 8-bit mu-law
    (G.711), then back to 16 kHz; nothing above 4 kHz survives."""
    x = soxr.resample(audio, SAMPLE_RATE, _PHONE_RATE)
    sos = signal.butter(4, _PHONE_BAND_HZ, btype="bandpass", fs=_PHONE_RATE, output="sos")
    x = signal.sosfilt(sos, x)
    if rng.random() < mu_law_p:
        x = np.clip(x, -1.0, 1.0)
        code = np.round(np.sign(x) * np.log1p(_MU * np.abs(x)) / np.log1p(_MU) * 127)
        y = code / 127
        x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(_MU)) / _MU
    out = soxr.resample(x.astype(np.float32), _PHONE_RATE, SAMPLE_RATE)
    return _limit(out[: audio.size] if out.size >= audio.size else np.pad(out, (0, audio.size - out.size)))


def _fit(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    # A random start, looping the recording as often as needed: long scenes give varied crops, short ones repeat.
    start = int(rng.integers(noise.size))
    reps = -(-(start + n) // noise.size)
    return np.tile(noise, reps)[start : start + n]


def add_noise(audio: np.ndarray, rng: np.random.Generator, noises: Sequence[np.ndarray],
              snr_db_range: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """Mix in one of `noises` (drawn; any lengths, looped or cropped to fit) at a signal-to-noise ratio in dB
    drawn from `snr_db_range`. If the mix would exceed [-1, 1] both parts are scaled together (SNR unchanged)."""
    if not noises:
        raise ValueError("add_noise needs at least one noise array")
    noise = np.asarray(noises[int(rng.integers(len(noises)))], dtype=np.float32)
    snr_db = float(rng.uniform(*snr_db_range))
    if audio.size == 0 or noise.size == 0:
        return audio.astype(np.float32, copy=True)
    noise = _fit(noise, audio.size, rng)
    p_signal, p_noise = _power(audio), _power(noise)
    if p_signal == 0.0 or p_noise == 0.0:
        return audio.astype(np.float32, copy=True)  # no speech or a silent noise: no SNR to set
    scale = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return _limit(audio.astype(np.float64) + noise * scale)


def _check_p(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {p}")


def _check_range(name: str, r: tuple[float, float], lo: float, hi: float) -> None:
    if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
        raise ValueError(f"AugmentConfig.{name} must be (low, high) with {lo} <= low <= high <= {hi}, got {r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (each step is drawn independently) and the ranges each step draws from."""

    speed_p: float = 0.5
    speed_range: tuple[float, float] = (0.9, 1.1)  # Kaldi's 3-way speed perturbation spans the same range
    reverb_p: float = 0.3
    rt60_range: tuple[float, float] = (0.2, 0.8)  # living rooms and offices to a large classroom
    drr_db_range: tuple[float, float] = (0.0, 12.0)  # far talker to close talker
    noise_p: float = 0.5
    snr_db_range: tuple[float, float] = (5.0, 20.0)
    telephone_p: float = 0.1
    mu_law_p: float = 0.5

    def __post_init__(self) -> None:
        for name in ("speed_p", "reverb_p", "noise_p", "telephone_p", "mu_law_p"):
            _check_p(name, getattr(self, name))
        _check_range("speed_range", self.speed_range, 0.5, 2.0)
        _check_range("rt60_range", self.rt60_range, 0.05, 3.0)
        _check_range("drr_db_range", self.drr_db_range, -20.0, 40.0)
        _check_range("snr_db_range", self.snr_db_range, -20.0, 60.0)


def augment(audio: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
            noises: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Apply a random subset of speed -> reverb -> noise -> telephone, each with its probability in `cfg`.

    The order follows the physics: a talker in a room, noise in the same room, then the phone channel.
    `noises` is needed when cfg.noise_p > 0.
    """
    if cfg.noise_p > 0 and not noises:
        raise ValueError(f"AugmentConfig.noise_p={cfg.noise_p} needs noise arrays: pass noises=[...] or set noise_p=0")
    # All four coin flips first, so whether a step runs never depends on how many draws an earlier step made.
    flips = rng.random(4)
    out = np.asarray(audio, dtype=np.float32)
    if flips[0] < cfg.speed_p:
        out = speed_perturb(out, rng, cfg.speed_range)
    if flips[1] < cfg.reverb_p:
        out = reverb(out, rng, cfg.rt60_range, cfg.drr_db_range)
    if flips[2] < cfg.noise_p:
        out = add_noise(out, rng, noises, cfg.snr_db_range)
    if flips[3] < cfg.telephone_p:
        out = telephone(out, rng, cfg.mu_law_p)
    return out
