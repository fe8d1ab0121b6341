"""Sound scenes with five reference captions each, for the synthetic audio captioning (AAC) corpus.

A scene is one to three events in sequence or overlapping, over faint noise: procedural ones (siren, rain, beeps, ...)
and, where their packages are installed, cropped real recordings (dogs, music, ...; see real_sounds). The captions
name the events, some of their attributes (pitch, speed, loudness, count) and their order or overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sota.data import real_sounds as _real
from sota.data.real_sounds import Recording

__all__ = ["SAMPLE_RATE", "EVENT_TYPES", "REAL_SHARE", "Event", "ScenePlan", "band_noise", "plan_scene",
           "render_scene", "caption_scene", "make_scene", "real_sources", "noise_bank"]

SAMPLE_RATE = 16000
EVENT_TYPES: tuple[str, ...] = ("tone", "sweep", "siren", "beeps", "ticking", "noise_burst", "rain", "engine",
                                "bell", "knocking", "wind", "birds")
# Sounds that are continuous enough to sit behind another event for the whole scene.
BACKGROUND_TYPES: tuple[str, ...] = ("rain", "engine", "wind", "ticking", "birds", "siren")
# Which attributes each event type varies (and can therefore be described in its captions).
_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "tone": ("pitch", "loud"), "sweep": ("direction", "rate", "loud"), "siren": ("pitch", "rate", "loud"),
    "beeps": ("pitch", "rate", "count", "loud"), "ticking": ("rate", "loud"), "noise_burst": ("count", "loud"),
    "rain": ("loud",), "engine": ("loud",), "bell": ("pitch", "count", "loud"),
    "knocking": ("rate", "count", "loud"), "wind": ("loud",), "birds": ("rate", "loud"),
}
# Real labels long and steady enough to run under a whole scene.
REAL_BACKGROUNDS: tuple[str, ...] = ("music",)
# Chance that an event slot takes a real recording when any is installed: half keeps the procedural vocabulary
# (counts, pitch) in the corpus while real sounds are what captions of real clips mostly name.
REAL_SHARE = 0.5
_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_TIMES_WORDS = ("", "once", "twice", "three times", "four times", "five times", "six times")


@dataclass(frozen=True)
class Event:
    """One sound event; attributes not used by its type are None."""

    kind: str
    start: float  # seconds
    duration: float  # seconds
    loud: bool
    pitch: str | None = None  # "high" | "low"
    rate: str | None = None  # "fast" | "slow"
    count: int | None = None
    direction: str | None = None  # "rising" | "falling" (sweeps)
    period: float | None = None  # seconds between repetitions, for counted events
    clip: str | None = None  # Recording.name of a real event; kind is then its label


@dataclass(frozen=True)
class ScenePlan:
    """What a scene contains: its events and how they are arranged."""

    duration: float
    layout: str  # "single" | "sequence" | "overlap" (events[-1] is the background) | "sequence_over_background"
    events: tuple[Event, ...]


# ---------------------------------------------------------------------------------------------------------------
# Planning
def _choose_attrs(rng: np.random.Generator, kind: str, slot: float) -> dict:
    attrs: dict = {"loud": bool(rng.random() < 0.5)}
    used = _ATTRIBUTES[kind]
    if "pitch" in used:
        attrs["pitch"] = "high" if rng.random() < 0.5 else "low"
    if "direction" in used:
        attrs["direction"] = "rising" if rng.random() < 0.5 else "falling"
    if "rate" in used:
        attrs["rate"] = "fast" if rng.random() < 0.5 else "slow"
    if "count" in used:
        # The period sets how many repetitions fit in the slot; the count is then drawn from what fits.
        period_ranges = {"beeps": {"fast": (0.15, 0.22), "slow": (0.4, 0.6)},
                         "knocking": {"fast": (0.13, 0.2), "slow": (0.35, 0.55)}}
        if kind in period_ranges:
            lo, hi = period_ranges[kind][attrs["rate"]]
            period = float(rng.uniform(lo, hi))
            if slot < period + 0.3:  # not even two slow ones fit: make it fast
                attrs["rate"] = "fast"
                lo, hi = period_ranges[kind]["fast"]
                period = float(rng.uniform(lo, hi))
            low_count = 2
        elif kind == "bell":
            period, low_count = float(rng.uniform(0.45, 0.8)), 1
        else:  # noise bursts
            period, low_count = float(rng.uniform(0.45, 0.7)), 1
        # Onset offset plus the longest sounding part of one repetition (see the renderers) must fit after the
        # last onset, so that every counted repetition is actually heard in full.
        tail = {"beeps": 0.05 + min(0.6 * period, 0.25), "knocking": 0.12, "bell": 0.2,
                "noise_burst": 0.03 + min(0.6 * period, 0.4)}[kind]
        fits = int((slot - tail) // period) + 1
        top = max(low_count, min(6 if kind != "bell" else 4, fits))
        attrs["count"] = int(rng.integers(low_count, top + 1)) if top > low_count else low_count
        attrs["period"] = period
    return attrs


def _sequence_slots(rng: np.random.Generator, start: float, end: float, k: int) -> list[tuple[float, float]]:
    gaps = rng.uniform(0.05, 0.25, size=k + 1)
    gaps *= min(1.0, 0.3 * (end - start) / gaps.sum())
    weights = rng.uniform(0.7, 1.3, size=k)
    usable = (end - start) - gaps.sum()
    lengths = usable * weights / weights.sum()
    slots, t = [], start + gaps[0]
    for i in range(k):
        slots.append((float(t), float(lengths[i])))
        t += lengths[i] + gaps[i + 1]
    return slots


def plan_scene(rng: np.random.Generator, duration_s: float, kinds: Sequence[str] | None = None,
               real: Sequence[Recording] | None = None) -> ScenePlan:
    """Choose 1-3 distinct event types (or use `kinds`), their layout, timing and attributes.

    real: the recordings real events may use (None: every installed one, `()`: procedural events only); their
    labels are event types beside EVENT_TYPES.
    """
    if duration_s < 0.5:
        raise ValueError(f"duration_s must be >= 0.5 s, got {duration_s}")
    by_label = _by_label(real)
    if kinds is not None:
        kinds = list(kinds)
        valid = EVENT_TYPES + tuple(by_label)
        unknown = [k for k in kinds if k not in valid]
        if unknown or not 1 <= len(kinds) <= 3 or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be 1-3 distinct names from {valid}, got {kinds}"
                             + (f" ({unknown} need real recordings: {_real.install_hint()})" if
                                any(k in _real.PHRASES for k in unknown) else ""))
        n = len(kinds)
    else:
        max_n = 1 if duration_s < 1.5 else 2 if duration_s < 3.0 else 3
        n = int(rng.choice(np.arange(1, max_n + 1), p=np.array([0.3, 0.45, 0.25][:max_n]) /
                           sum([0.3, 0.45, 0.25][:max_n])))
    if n == 1:
        layout = "single"
    elif n == 2:
        layout = "overlap" if rng.random() < 0.45 else "sequence"
    else:
        layout = "sequence_over_background" if rng.random() < 0.5 else "sequence"
    if kinds is None:
        kinds = _choose_kinds(rng, n, layout in ("overlap", "sequence_over_background"), tuple(by_label))
    if layout == "single":
        lead = float(rng.uniform(0.0, 0.15 * duration_s))
        slots = [(lead, duration_s - lead - float(rng.uniform(0.0, 0.1 * duration_s)))]
    elif layout == "sequence":
        slots = _sequence_slots(rng, 0.0, duration_s, n)
    else:
        # Foreground event(s) sit inside the scene; the background (last kind) runs under all of it.
        margin = float(rng.uniform(0.05, 0.2)) * duration_s
        slots = _sequence_slots(rng, margin, duration_s - margin * float(rng.uniform(0.3, 1.0)), n - 1)
        slots.append((0.0, duration_s))
    events = tuple(_real_event(rng, k, s, d, by_label[k]) if k in by_label else
                   Event(kind=k, start=s, duration=d, **_choose_attrs(rng, k, d)) for k, (s, d) in zip(kinds, slots))
    return ScenePlan(duration=float(duration_s), layout=layout, events=events)


def _by_label(real: Sequence[Recording] | None) -> dict[str, list[Recording]]:
    out: dict[str, list[Recording]] = {}
    for rec in _real.real_sounds() if real is None else real:
        out.setdefault(rec.label, []).append(rec)
    return out


def _choose_kinds(rng: np.random.Generator, n: int, background: bool, labels: tuple[str, ...]) -> list[str]:
    """n distinct kinds, the last one a background kind when `background`; real labels with REAL_SHARE."""
    chosen: list[str] = []

    def pick(procedural: Sequence[str], real: Sequence[str]) -> None:
        procedural = [k for k in procedural if k not in chosen]
        real = [k for k in real if k not in chosen]
        pool = real if real and (not procedural or rng.random() < REAL_SHARE) else procedural
        chosen.append(str(pool[int(rng.integers(len(pool)))]))

    if background:
        pick(BACKGROUND_TYPES, [k for k in labels if k in REAL_BACKGROUNDS])
    for _ in range(n - int(background)):
        pick(EVENT_TYPES, labels)
    return chosen[1:] + chosen[:1] if background else chosen


def _real_event(rng: np.random.Generator, label: str, start: float, slot: float, recs: list[Recording]) -> Event:
    rec = recs[int(rng.integers(len(recs)))]
    # A recording shorter than its slot is played once, a little after the slot opens; longer ones are cropped.
    length = min(slot, rec.seconds)
    start += float(rng.uniform(0.0, 0.3 * (slot - length)))
    return Event(kind=label, start=start, duration=length, loud=bool(rng.random() < 0.5), clip=rec.name)


# ---------------------------------------------------------------------------------------------------------------
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


def _floor_noise(rng: np.random.Generator, n: int) -> np.ndarray:
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
    mix += _floor_noise(rng, total) * rng.uniform(0.001, 0.004)
    peak = np.abs(mix).max()
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Captions
_T = TypeVar("_T")


def _p(rng: np.random.Generator, *options: _T) -> _T:
    return options[int(rng.integers(len(options)))]


class _Say:
    """Word choices for describing one event; `detail` is the chance of mentioning each optional attribute."""

    def __init__(self, ev: Event, rng: np.random.Generator, detail: float) -> None:
        self.ev, self.rng, self.detail = ev, rng, detail

    def pick(self, *options: _T) -> _T:
        return _p(self.rng, *options)

    def mention(self, scale: float = 1.0) -> bool:
        return bool(self.rng.random() < self.detail * scale)

    def loud_adj(self) -> str:
        return self.pick("loud", "loud", "strong") if self.ev.loud else self.pick("quiet", "soft", "faint")

    def loud_adv(self) -> str:
        return "loudly" if self.ev.loud else self.pick("quietly", "softly", "faintly")

    def pitch_adj(self) -> str:
        return self.pick("high pitched", "high", "shrill") if self.ev.pitch == "high" else \
            self.pick("low pitched", "low", "deep")

    def rate_adv(self) -> str:
        return self.pick("quickly", "rapidly", "fast") if self.ev.rate == "fast" else self.pick("slowly", "steadily")

    def maybe(self, word: Callable[[], str], scale: float = 1.0) -> str:
        return word() if self.mention(scale) else ""

    @property
    def count(self) -> str:
        return _COUNT_WORDS[self.ev.count or 1]

    @property
    def times(self) -> str:
        return _TIMES_WORDS[self.ev.count or 1]


def _a(words: str) -> str:
    words = " ".join(words.split())
    return ("an " if words[0] in "aeiou" else "a ") + words


def _say_tone(s: _Say) -> tuple[str, str]:
    noun = _a(f"{s.maybe(s.loud_adj)} {s.maybe(s.pitch_adj)} "
              f"{s.pick('tone', 'steady tone', 'pure tone', 'electronic tone', 'continuous tone')}")
    return f"{noun} {s.pick('plays', 'sounds', 'is heard', 'rings out', 'holds steady')}", noun


def _say_sweep(s: _Say) -> tuple[str, str]:
    up = s.ev.direction == "rising"
    clause = s.pick(f"a tone {'rises' if up else 'falls'} in pitch", f"a tone sweeps {'upward' if up else 'downward'}",
                    f"a whistle {'rises' if up else 'falls'}", f"the pitch of a tone goes {'up' if up else 'down'}")
    pace = s.maybe(lambda: "fast" if s.ev.rate == "fast" else "slow")
    noun = _a(f"{s.maybe(s.loud_adj)} {pace} {s.ev.direction} {s.pick('tone', 'sweep', 'whistle')}")
    return f"{clause} {s.maybe(s.rate_adv)}", noun


def _say_siren(s: _Say) -> tuple[str, str]:
    wail = "wailing" if s.ev.rate == "slow" else "warbling"
    core = s.pick("siren", "emergency siren", "police siren", "alarm siren", f"{wail} siren")
    noun = _a(f"{s.maybe(s.loud_adj)} {s.maybe(s.pitch_adj)} {core}")
    verb = s.pick("wails", "sounds", "blares" if s.ev.loud else "wails in the distance", "goes off")
    how = s.maybe(lambda: "slowly rising and falling" if s.ev.rate == "slow" else s.pick("rapidly", "quickly"))
    return f"{noun} {verb} {how}", noun


def _say_beeps(s: _Say) -> tuple[str, str]:
    speed = s.maybe(s.rate_adv)
    adj = f"{s.maybe(s.loud_adj, 0.5)} {s.maybe(s.pitch_adj)}"
    return s.pick(
        (f"{_a(adj + ' beep')} repeats {s.times} {speed}", f"{_a(adj + ' beep')} repeating {s.times}"),
        (f"{s.count} {adj} beeps sound {speed}", f"{s.count} {adj} beeps"),
        (f"a device beeps {s.times} {speed}", f"a series of {s.count} {adj} beeps"),
        (f"an alarm beeps {s.times} {speed}", f"{s.count} {adj} electronic beeps"),
    )


def _say_ticking(s: _Say) -> tuple[str, str]:
    fast = s.ev.rate == "fast"
    clause = s.pick("a clock ticks", "a clock is ticking", "something clicks", "a mechanism ticks")
    how = s.maybe(lambda: s.pick("rapidly", "quickly") if fast else s.pick("slowly", "steadily")) or \
        s.maybe(s.loud_adv, 0.4)
    noun = s.pick(f"{'rapid' if fast else 'slow'} ticking", "a ticking clock",
                  f"{'fast' if fast else 'steady'} clicking", f"{'loud' if s.ev.loud else 'faint'} ticking")
    return f"{clause} {how}", noun


def _say_noise_burst(s: _Say) -> tuple[str, str]:
    loud = s.maybe(lambda: s.pick("loud", "sharp") if s.ev.loud else s.pick("soft", "quiet"))
    if (s.ev.count or 1) == 1:
        noun = s.pick(f"a {loud} burst of static", f"a short {loud} burst of white noise", f"a {loud} hiss",
                      f"a {loud} blast of noise")
        return s.pick(f"{noun} sounds", f"static hisses {s.loud_adv()} once", f"{noun} is heard once"), noun
    noun = s.pick(f"{s.count} {loud} bursts of static", f"{s.count} short {loud} bursts of noise",
                  f"{s.count} {loud} hisses")
    clause = s.pick(f"white noise bursts {s.times}", f"static hisses {s.times}", f"{noun} sound",
                    f"a burst of noise repeats {s.times}")
    return clause, noun


def _say_rain(s: _Say) -> tuple[str, str]:
    if not s.mention():
        return s.pick("rain falls", "it rains", "rain is falling"), s.pick("rain", "falling rain", "rainfall")
    if s.ev.loud:
        return (s.pick("heavy rain pours", "rain pours down", "rain falls heavily", "it is raining hard"),
                s.pick("heavy rain", "a downpour", "pouring rain", "a heavy rainfall"))
    return (s.pick("light rain falls", "rain patters softly", "it drizzles", "rain falls gently"),
            s.pick("light rain", "a gentle drizzle", "soft rain", "light rainfall"))


def _say_engine(s: _Say) -> tuple[str, str]:
    core = s.pick("engine", "motor", "idling engine", "running engine", "rumbling engine")
    if s.ev.loud:
        noun = _a(f"{s.maybe(s.loud_adj)} {core}")
    else:
        noun = _a(f"{s.maybe(lambda: s.pick('distant', 'quiet', 'faint'))} {core}")
    verb = s.pick("hums", "idles", "drones", "rumbles", "runs")
    how = s.maybe(s.loud_adv, 0.3) or s.pick("", "", "steadily", "continuously")
    return f"{noun} {verb} {how}", s.pick(noun, f"the hum of {noun}", f"the low drone of {noun}")


def _say_bell(s: _Say) -> tuple[str, str]:
    high = s.ev.pitch == "high"
    core = s.pick("chime", "small bell", "high bell") if high else s.pick("deep bell", "large bell", "low bell")
    plain = s.pick("a bell", "a chime" if high else "a bell")
    bell = _a(f"{s.maybe(s.loud_adj, 0.5)} {core}") if s.mention() else plain
    clause = f"{bell} {s.pick('rings', 'chimes' if high else 'tolls', 'is struck')} {s.times}"
    strikes = f"{s.count} {'chimes' if high else 'bell strikes'}" if (s.ev.count or 1) > 1 else \
        f"a single {core.split()[-1]} strike"
    return clause, s.pick(f"{bell} ringing {s.times}", f"the ringing of {bell}", strikes)


def _say_knocking(s: _Say) -> tuple[str, str]:
    speed, loud = s.maybe(s.rate_adv), s.maybe(s.loud_adj)
    clause = s.pick(f"someone knocks on a door {s.times} {speed}", f"{s.count} {loud} knocks sound",
                    f"a person knocks {s.times} {speed}", f"someone knocks {speed} {s.loud_adv()}")
    noun = s.pick(f"{s.count} {loud} knocks", f"{loud} knocking on a door", f"someone knocking {s.times}",
                  f"{'rapid' if s.ev.rate == 'fast' else 'slow'} knocking")
    return clause, noun


def _say_wind(s: _Say) -> tuple[str, str]:
    if not s.mention():
        return s.pick("wind blows", "the wind blows"), s.pick("wind", "the sound of wind", "blowing wind")
    if s.ev.loud:
        return (s.pick("a strong wind blows", "wind howls", "the wind gusts strongly", "strong wind roars"),
                s.pick("strong wind", "gusting wind", "a howling wind", "strong gusts of wind"))
    return (s.pick("a gentle breeze blows", "wind blows softly", "a light wind rustles", "a soft wind blows"),
            s.pick("a gentle breeze", "soft wind", "a light wind", "a faint breeze"))


def _say_birds(s: _Say) -> tuple[str, str]:
    fast = s.ev.rate == "fast"
    how = s.maybe(lambda: s.pick("rapidly", "busily", "continuously") if fast else
                  s.pick("now and then", "occasionally", "sparsely"))
    clause = s.pick("birds chirp", "a bird tweets", "birds sing", "a bird chirps", "small birds twitter")
    if not s.ev.loud and s.mention():
        noun = s.pick("distant birds chirping", "faint birdsong", "a distant chirping bird")
    else:
        noun = s.pick("birds chirping", "a chirping bird", "birdsong", "birds tweeting", "chirping birds")
    return f"{clause} {how}", noun


_SAY: dict[str, Callable[[_Say], tuple[str, str]]] = {
    "tone": _say_tone, "sweep": _say_sweep, "siren": _say_siren, "beeps": _say_beeps, "ticking": _say_ticking,
    "noise_burst": _say_noise_burst, "rain": _say_rain, "engine": _say_engine, "bell": _say_bell,
    "knocking": _say_knocking, "wind": _say_wind, "birds": _say_birds,
}


def _say_real(s: _Say) -> tuple[str, str]:
    words = _real.PHRASES[s.ev.kind]
    clause, noun = s.pick(*words.clauses), s.pick(*words.nouns)
    if not s.ev.loud and words.far and s.mention(0.4):
        return s.pick(*words.far), noun
    if words.adverbs and s.mention(0.5):
        clause = f"{clause} {s.pick(*words.adverbs)}"
    elif s.mention(0.25):
        clause = f"{clause} {s.loud_adv()}"
    return clause, noun


def _describe(ev: Event, rng: np.random.Generator, detail: float) -> tuple[str, str]:
    """One (clause, noun phrase) pair for the event, e.g. ("a siren wails", "a wailing siren")."""
    clause, noun = (_say_real if ev.clip else _SAY[ev.kind])(_Say(ev, rng, detail))
    return " ".join(clause.split()), " ".join(noun.split())


def _combine(plan: ScenePlan, rng: np.random.Generator, detail: float) -> str:
    evs = plan.events
    d = [_describe(ev, rng, detail) for ev in evs]
    c = [x[0] for x in d]
    n = [x[1] for x in d]
    if plan.layout == "single":
        return _p(rng, c[0], c[0], n[0], f"{n[0]} can be heard", f"the sound of {n[0]}", f"you can hear {n[0]}")
    if plan.layout == "sequence" and len(evs) == 2:
        return _p(rng, f"{c[0]} then {c[1]}", f"{c[0]} and then {c[1]}", f"{c[0]} followed by {n[1]}",
                  f"first {c[0]} and then {c[1]}", f"{n[0]} followed by {n[1]}", f"{c[0]} before {c[1]}",
                  f"after {n[0]} {c[1]}", f"{c[0]} and {c[1]}", f"{c[0]} after which {c[1]}")
    if plan.layout == "overlap":
        fg, bg = 0, 1
        # Annotators often name only the salient sound when the background is faint.
        if not evs[bg].loud and evs[fg].loud and rng.random() < 0.15:
            return _p(rng, c[fg], f"{c[fg]} nearby", f"the sound of {n[fg]}")
        return _p(rng, f"{c[fg]} while {c[bg]}", f"{c[fg]} as {c[bg]}", f"{c[bg]} while {c[fg]}",
                  f"{c[fg]} with {n[bg]} in the background", f"{n[fg]} over {n[bg]}",
                  f"{n[fg]} and {n[bg]} at the same time", f"{c[fg]} over the sound of {n[bg]}",
                  f"{n[bg]} in the background as {c[fg]}", f"{c[bg]} and {c[fg]}", f"{n[fg]} with {n[bg]}",
                  f"{c[fg]} amid {n[bg]}", f"{c[bg]} as {c[fg]}")
    if plan.layout == "sequence":
        return _p(rng, f"{c[0]} then {c[1]} and then {c[2]}", f"{c[0]} followed by {n[1]} and then {n[2]}",
                  f"first {c[0]} then {c[1]} and finally {c[2]}", f"{n[0]} then {n[1]} then {n[2]}",
                  f"{c[0]} and then {c[1]} before {c[2]}")
    # sequence_over_background: events 0 and 1 in turn, event 2 throughout
    return _p(rng, f"{c[0]} then {c[1]} while {c[2]}", f"{c[0]} followed by {n[1]} with {n[2]} in the background",
              f"{n[2]} in the background as {c[0]} and then {c[1]}", f"while {c[2]} {c[0]} and then {c[1]}",
              f"{c[0]} and then {c[1]} over {n[2]}", f"{n[0]} and then {n[1]} over {n[2]}")


def caption_scene(plan: ScenePlan, rng: np.random.Generator, n: int = 5) -> list[str]:
    """`n` distinct lowercase captions for the plan, from varied templates, synonyms and levels of detail."""
    captions: list[str] = []
    for attempt in range(400):
        # Vary detail like human annotators do: some terse, some thorough.
        detail = (0.35, 0.6, 0.85, 1.0)[attempt % 4]
        text = " ".join(_combine(plan, rng, detail).split())
        if text not in captions:
            captions.append(text)
            if len(captions) == n:
                return captions
    raise RuntimeError(f"could not write {n} distinct captions for {plan}")


def make_scene(rng: np.random.Generator, duration_s: float, kinds: Sequence[str] | None = None,
               real: Sequence[Recording] | None = None) -> tuple[np.ndarray, list[str]]:
    """A random scene: (float32 16 kHz audio of `duration_s` seconds, 5 distinct reference captions).

    kinds optionally fixes the event types (1-3 distinct names from EVENT_TYPES or the labels of `real`, the last
    one is the background when the drawn layout overlaps). real: the recordings real events may use (None: every
    installed one, see real_sources(); `()`: procedural events only). Same rng state and recordings, same scene.
    """
    plan = plan_scene(rng, duration_s, kinds, real)
    audio = render_scene(plan, rng, real)
    return audio, caption_scene(plan, rng)


def real_sources() -> tuple[str, ...]:
    """The installed packages whose recordings make_scene uses by default, as "package==version".

    They change the generated audio and captions, so a corpus built from scenes should record them.
    """
    return _real.installed_sources()


def noise_bank(rng: np.random.Generator, n: int, seconds: float,
               real: Sequence[Recording] | None = None) -> list[np.ndarray]:
    """n unit-RMS float32 noise clips of `seconds` each, for mixing under speech at a chosen SNR.

    About half are crops of real recordings (looped when shorter) over faint room noise, the rest rendered scenes
    (which contain real events too where installed); without real recordings all are procedural scenes.
    """
    if n < 0 or seconds < 0.5:
        raise ValueError(f"noise_bank needs n >= 0 and seconds >= 0.5, got n={n}, seconds={seconds}")
    recs = list(_real.real_sounds() if real is None else real)
    labels = sorted({r.label for r in recs})
    length = int(round(seconds * SAMPLE_RATE))
    bank: list[np.ndarray] = []
    for _ in range(n):
        if labels and rng.random() < 0.5:
            # By label, then recording: five music tracks must not crowd out the single dog.
            label = labels[int(rng.integers(len(labels)))]
            pool = [r for r in recs if r.label == label]
            audio = pool[int(rng.integers(len(pool)))].audio
            start = int(rng.integers(max(1, len(audio) - length + 1)))
            x = np.resize(np.roll(audio, -start) if len(audio) < length else audio[start:start + length], length)
            x = x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)
            x = x + 0.03 * _floor_noise(rng, length)
        else:
            x = make_scene(rng, seconds, real=recs)[0].astype(np.float64)
        bank.append((x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32))
    return bank
