"""Sound scenes with five reference captions each, for the synthetic audio captioning (AAC) corpus.

A scene is one to three events in sequence or overlapping, over faint noise: procedural ones (siren, rain, beeps, ...)
and, where their packages are installed, cropped real recordings (dogs, music, ...; see real_sounds). The captions
name the events, some of their attributes (pitch, speed, loudness, count) and their order or overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sota.data import real_sounds as _real
from sota.data.real_sounds import Recording
from sota.data.scene_captions import caption_scene
from sota.data.scene_sounds import SAMPLE_RATE, band_noise, floor_noise, render_scene

__all__ = ["SAMPLE_RATE", "EVENT_TYPES", "REAL_SHARE", "Event", "ScenePlan", "band_noise", "plan_scene",
           "render_scene", "caption_scene", "make_scene", "real_sources", "noise_bank"]

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
            x = x + 0.03 * floor_noise(rng, length)
        else:
            x = make_scene(rng, seconds, real=recs)[0].astype(np.float64)
        bank.append((x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32))
    return bank
