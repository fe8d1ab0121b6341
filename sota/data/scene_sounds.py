"""The sounds of a scene: procedural renderers for each event type (tones, sirens, rain, engines, birds, ...),
real recordings cropped to their slot, mixed at the plan's levels over faint noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sota.data import real_sounds as _real
from sota.data.real_sounds import Recording

if TYPE_CHECKING:
    from sota.data.scenes import Event, ScenePlan

SAMPLE_RATE = 16000


# Rendering (numpy only)
def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / SAMPLE_RATE


def _fade(x: np.ndarray, attack: float = 0.01, release: float = 0.02) -> np.ndarray:
    # Short ramps avoid clicks at event edges that would sound like an extra "ticking" event.
    n = len(x)
    a, r = min(n // 2, int(attack * SAMPLE_RATE)), min(n // 2, int(release * SAMPLE_RATE))
    env = np.ones(n)
    if a:
        env[:a] = np.linspace(0.0, 1.0, a)
    if r:
        env[n - r:] = np.linspace(1.0, 0.0, r)
    return x * env


def _fast_len(n: int) -> int:
    """Smallest 2^a * 3^b * 5^c >= n: FFTs of awkward (e.g. prime) lengths are 10x slower."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _spectral_filter(x: np.ndarray, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Filter x by multiplying its spectrum with gain(freqs_hz); circular, which is harmless for noise."""
    n = len(x)
    m = _fast_len(n)
    spec = np.fft.rfft(x, m)
    return np.fft.irfft(spec * gain(np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)), m)[:n]


def band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """Unit-variance noise band-limited to [lo, hi] Hz with an optional 1/f**tilt slope.

    Drawn directly in the frequency domain (complex Gaussian bins), which needs one inverse FFT instead of a
    forward/inverse pair; scenes are dominated by FFT time.
    """
    m = _fast_len(n)
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)
    gain = ((f >= lo) & (f <= hi)).astype(np.float64)
    if tilt:
        gain /= np.maximum(f, 20.0) ** tilt
    spec = (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * gain
    out = np.fft.irfft(spec, m)[:n]
    return out / (np.std(out) + 1e-12)


_FLOOR_NOISE: np.ndarray | None = None


def floor_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Faint pinkish room noise: a random crop of one fixed 16 s table, far cheaper than fresh filtered noise."""
    global _FLOOR_NOISE
    if _FLOOR_NOISE is None:
        _FLOOR_NOISE = band_noise(np.random.default_rng(20240611), 1 << 18, 20, 8000, tilt=0.5)
    start = int(rng.integers(len(_FLOOR_NOISE)))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return sign * np.take(_FLOOR_NOISE, np.arange(start, start + n), mode="wrap")


def _sine(freq: np.ndarray | float, n: int) -> np.ndarray:
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    return np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)


def _render_tone(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    f0 = rng.uniform(1200, 2600) if ev.pitch == "high" else rng.uniform(180, 400)
    return _fade(_sine(f0, n) + 0.15 * _sine(2 * f0, n), 0.03, 0.05)


def _render_sweep(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    # Fast sweeps repeat within the slot; slow ones glide once across it.
    seg = n if ev.rate == "slow" else min(n, int(rng.uniform(0.25, 0.45) * SAMPLE_RATE))
    lo, hi = rng.uniform(200, 500), rng.uniform(1800, 3500)
    ramp = np.geomspace(lo, hi, seg) if ev.direction == "rising" else np.geomspace(hi, lo, seg)
    freq = np.resize(ramp, n)
    return _fade(_sine(freq, n), 0.02, 0.05)


def _render_siren(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    center = rng.uniform(900, 1300) if ev.pitch == "high" else rng.uniform(450, 650)
    mod_hz = rng.uniform(3.0, 6.0) if ev.rate == "fast" else rng.uniform(0.3, 0.6)
    freq = center * (1 + 0.35 * np.sin(2 * np.pi * mod_hz * _t(n) - np.pi / 2))
    x = _sine(freq, n) + 0.4 * _sine(2 * freq, n) + 0.2 * _sine(3 * freq, n)
    return _fade(x, 0.1, 0.15)


def _render_repeats(n: int, starts: np.ndarray, unit: np.ndarray) -> np.ndarray:
    x = np.zeros(n)
    for s in (starts * SAMPLE_RATE).astype(int):
        if s >= n:
            break
        m = min(len(unit), n - s)
        x[s:s + m] += unit[:m]
    return x


def _render_beeps(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    f0 = rng.uniform(1500, 3000) if ev.pitch == "high" else rng.uniform(300, 600)
    assert ev.period is not None and ev.count is not None
    length = int(min(0.6 * ev.period, 0.25) * SAMPLE_RATE)
    unit = _fade(_sine(f0, length), 0.005, 0.01)
    return _render_repeats(n, 0.05 + ev.period * np.arange(ev.count), unit)


def _decaying_partials(rng: np.random.Generator, f0: float, ratios: Sequence[float], tau: float, n: int) -> np.ndarray:
    t = _t(n)
    x = np.zeros(n)
    for i, ratio in enumerate(ratios):
        # Higher partials die faster, as in struck metal.
        x += np.exp(-t * (1 + i) / tau) * np.sin(2 * np.pi * f0 * ratio * t + rng.uniform(0, 2 * np.pi)) / (1 + i)
    return x


def _render_ticking(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    period = rng.uniform(0.1, 0.16) if ev.rate == "fast" else rng.uniform(0.45, 0.8)
    click_n = int(0.012 * SAMPLE_RATE)
    click = band_noise(rng, click_n, 2000, 7000) * np.exp(-np.arange(click_n) / (0.002 * SAMPLE_RATE))
    starts = np.arange(0.02, n / SAMPLE_RATE, period)
    # Alternate tick/tock levels like a mechanical clock.
    x = np.zeros(n)
    for i, s in enumerate((starts * SAMPLE_RATE).astype(int)):
        m = min(click_n, n - s)
        x[s:s + m] += click[:m] * (1.0 if i % 2 == 0 else 0.7)
    return x


def _render_noise_burst(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    assert ev.period is not None and ev.count is not None
    length = int(min(0.6 * ev.period, rng.uniform(0.2, 0.4)) * SAMPLE_RATE)
    unit = _fade(rng.standard_normal(length), 0.003, 0.04)
    return _render_repeats(n, 0.03 + ev.period * np.arange(ev.count), unit)


def _render_rain(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    # Rain = a bed of hiss plus many tiny drop impacts; heavy rain has more, denser drops.
    density = 1500 if ev.loud else 300
    drops = np.zeros(n)
    idx = rng.integers(0, n, size=int(density * n / SAMPLE_RATE))
    drops[idx] = rng.standard_normal(len(idx)) * rng.uniform(0.3, 1.0, size=len(idx))
    crackle = _spectral_filter(drops, lambda f: ((f > 1500) & (f < 7500)).astype(np.float64))
    crackle /= np.std(crackle) + 1e-12
    bed = band_noise(rng, n, 400, 6000, tilt=0.5)
    return _fade(crackle + 0.5 * bed, 0.2, 0.3)


def _render_engine(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    f0 = rng.uniform(35, 70)
    t = _t(n)
    # Slight speed wobble and firing-rate amplitude modulation make a static drone sound mechanical.
    freq = f0 * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    am = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(8, 20) * t)
    return _fade(x * am + 0.3 * band_noise(rng, n, 50, 800), 0.3, 0.3)


def _render_bell(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    assert ev.period is not None and ev.count is not None
    f0 = rng.uniform(900, 1600) if ev.pitch == "high" else rng.uniform(180, 350)
    tau = rng.uniform(0.3, 0.6) if ev.pitch == "high" else rng.uniform(0.8, 1.6)
    # Past ~7 time constants the strike is inaudible, so the unit need not span the whole slot.
    unit = _decaying_partials(rng, f0, (1.0, 2.0, 2.76, 5.4, 8.93), tau, min(n, int(7 * tau * SAMPLE_RATE)))
    return _fade(_render_repeats(n, 0.02 + ev.period * np.arange(ev.count), _fade(unit, 0.002, 0.0)), 0.0, 0.05)


def _render_knocking(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    assert ev.period is not None and ev.count is not None
    knock_n = int(0.09 * SAMPLE_RATE)
    thud = _decaying_partials(rng, rng.uniform(110, 220), (1.0, 1.6, 2.3), 0.025, knock_n)
    thud += 0.3 * band_noise(rng, knock_n, 500, 4000) * np.exp(-np.arange(knock_n) / (0.004 * SAMPLE_RATE))
    jitter = rng.uniform(-0.01, 0.01, size=ev.count)
    return _render_repeats(n, np.maximum(0.0, 0.03 + ev.period * np.arange(ev.count) + jitter), thud)


def _render_wind(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    t = _t(n)
    x = band_noise(rng, n, 40, 900 if ev.loud else 500, tilt=1.0)
    # Slow gusts: two incommensurate low-frequency envelopes.
    gust = 0.6 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.15, 0.4) * t + rng.uniform(0, 6.3)) \
        + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 0.9) * t + rng.uniform(0, 6.3))
    whistle = 0.15 * _sine(rng.uniform(300, 600) * (1 + 0.1 * np.sin(2 * np.pi * 0.3 * t)), n) * gust
    return _fade(x * gust + (whistle if ev.loud else 0.0), 0.4, 0.4)


def _render_birds(rng: np.random.Generator, ev: Event, n: int) -> np.ndarray:
    x = np.zeros(n)
    rate_hz = rng.uniform(5, 9) if ev.rate == "fast" else rng.uniform(1.0, 2.0)
    t = 0.05
    while t < n / SAMPLE_RATE - 0.05:
        m = int(rng.uniform(0.03, 0.1) * SAMPLE_RATE)
        f_start, f_end = rng.uniform(2500, 4500), rng.uniform(3000, 6500)
        chirp = _fade(_sine(np.linspace(f_start, f_end, m), m), 0.005, 0.01) * np.hanning(m)
        s = int(t * SAMPLE_RATE)
        k = min(m, n - s)
        x[s:s + k] += chirp[:k] * rng.uniform(0.5, 1.0)
        t += rng.exponential(1.0 / rate_hz) + m / SAMPLE_RATE
    return x


_RENDERERS: dict[str, Callable[[np.random.Generator, Event, int], np.ndarray]] = {
    "tone": _render_tone, "sweep": _render_sweep, "siren": _render_siren, "beeps": _render_beeps,
    "ticking": _render_ticking, "noise_burst": _render_noise_burst, "rain": _render_rain, "engine": _render_engine,
    "bell": _render_bell, "knocking": _render_knocking, "wind": _render_wind, "birds": _render_birds,
}


def _crop(rng: np.random.Generator, audio: np.ndarray, n: int) -> np.ndarray:
    """n samples of `audio` (zero-padded if shorter), avoiding crops that land in a pause of a sparse recording."""
    if len(audio) <= n:
        return np.pad(audio.astype(np.float64), (0, n - len(audio)))
    whole = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    best, best_rms = 0, -1.0
    # A few random tries: the first one loud enough wins, so the draw count is fixed by the data, not by chance.
    for start in rng.integers(0, len(audio) - n + 1, size=6):
        rms = float(np.sqrt(np.mean(np.square(audio[start:start + n], dtype=np.float64))))
        if rms >= 0.5 * whole:
            best = int(start)
            break
        if rms > best_rms:
            best, best_rms = int(start), rms
    return _fade(audio[best:best + n].astype(np.float64), 0.02, 0.08)


def _recordings(plan: ScenePlan, real: Sequence[Recording] | None) -> dict[str, Recording]:
    wanted = {ev.clip for ev in plan.events if ev.clip}
    if not wanted:
        return {}
    have = {rec.name: rec for rec in (_real.real_sounds() if real is None else real)}
    missing = sorted(wanted - set(have))
    if missing:
        raise KeyError(f"the plan uses real recordings that are not available: {missing}; available: "
                       f"{sorted(have) or 'none'}. Install with:\n{_real.install_hint()}")
    return {name: have[name] for name in wanted}


def render_scene(plan: ScenePlan, rng: np.random.Generator, real: Sequence[Recording] | None = None) -> np.ndarray:
    """Mix the plan's events over faint background noise; float32 mono at 16 kHz, exactly plan.duration long.

    real: where the plan's real events find their recordings (None: the installed ones).
    """
    total = int(round(plan.duration * SAMPLE_RATE))
    mix = np.zeros(total)
    recordings = _recordings(plan, real)
    for ev in plan.events:
        start = int(round(ev.start * SAMPLE_RATE))
        n = max(0, min(int(round(ev.duration * SAMPLE_RATE)), total - start))
        if n < 32:
            continue
        x = _crop(rng, recordings[ev.clip].audio, n) if ev.clip else _RENDERERS[ev.kind](rng, ev, n)
        # Level by RMS over the sounding part so sparse events (two knocks) are not drowned by dense ones.
        active = np.abs(x) > 1e-4 * (np.abs(x).max() + 1e-12)
        rms = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 1.0
        if ev.clip:
            # Recordings have a noise floor, so "active" is every sample; level by their louder half of 10 ms
            # frames instead, or barks with pauses between them would be pushed far above the other events.
            frames = np.mean(x[: n // 160 * 160].reshape(-1, 160) ** 2, axis=1) if n >= 160 else np.mean(x**2)[None]
            rms = np.sqrt(np.mean(frames[frames >= np.median(frames)]))
        level = rng.uniform(0.12, 0.18) if ev.loud else rng.uniform(0.025, 0.045)
        mix[start:start + n] += x * (level / (rms + 1e-12))
    mix += floor_noise(rng, total) * rng.uniform(0.001, 0.004)
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.astype(np.float32)
