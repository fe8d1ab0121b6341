"""The caption grammar of sound scenes: each event named with some of its attributes (pitch, speed, loudness,
count), events joined by their order or overlap, varied as people write captions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from sota.data import real_sounds as _real

if TYPE_CHECKING:
    from sota.data.scenes import Event, ScenePlan

_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_TIMES_WORDS = ("", "once", "twice", "three times", "four times", "five times", "six times")
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


Phrasings = tuple[tuple[str, ...], tuple[str, ...]]  # (clauses, noun phrases)


def _by_loudness(s: _Say, plain: Phrasings, loud: Phrasings, soft: Phrasings) -> tuple[str, str]:
    """A clause and a noun phrase for a sound whose loudness is said only when the caption mentions detail."""
    clauses, nouns = plain if not s.mention() else loud if s.ev.loud else soft
    return s.pick(*clauses), s.pick(*nouns)


def _say_rain(s: _Say) -> tuple[str, str]:
    return _by_loudness(
        s, (("rain falls", "it rains", "rain is falling"), ("rain", "falling rain", "rainfall")),
        (("heavy rain pours", "rain pours down", "rain falls heavily", "it is raining hard"),
         ("heavy rain", "a downpour", "pouring rain", "a heavy rainfall")),
        (("light rain falls", "rain patters softly", "it drizzles", "rain falls gently"),
         ("light rain", "a gentle drizzle", "soft rain", "light rainfall")))


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
    return _by_loudness(
        s, (("wind blows", "the wind blows"), ("wind", "the sound of wind", "blowing wind")),
        (("a strong wind blows", "wind howls", "the wind gusts strongly", "strong wind roars"),
         ("strong wind", "gusting wind", "a howling wind", "strong gusts of wind")),
        (("a gentle breeze blows", "wind blows softly", "a light wind rustles", "a soft wind blows"),
         ("a gentle breeze", "soft wind", "a light wind", "a faint breeze")))


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
