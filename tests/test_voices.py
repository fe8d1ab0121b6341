"""The voice pool: every installed voice speaks, repeats itself exactly, follows speed, and a missing one says
how to install it. Voices not installed here are skipped with the install command as the reason."""

import multiprocessing

import numpy as np
import pytest

from sota.data import voices
from sota.data.voices import VoiceUnavailableError, check_voices, synthesize

SENTENCE = "Glue the sheet to the dark blue background."  # 8 words, 11 syllables
# Engines whose calls cost a subprocess start or a model load of ~0.3-1 s each: extra calls go to the slow tier.
_SLOW_ENGINES = ("festival", "piper")


def _require(voice: str) -> None:
    try:
        check_voices([voice])
    except VoiceUnavailableError as e:
        pytest.skip(f"not installed: {e}")


def _marked(ids):
    return [pytest.param(v, marks=pytest.mark.slow) if v.split(":")[0] in _SLOW_ENGINES else v for v in ids]


def _speaks(audio: np.ndarray) -> None:
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio).max() <= 1.0
    duration = audio.size / voices.SAMPLE_RATE
    assert 1.0 < duration < 6.0, duration  # 11 syllables at 2-10 syllables/s, plus edge silence
    frames = audio[: audio.size // 400 * 400].reshape(-1, 400)  # 25 ms frames
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.01
    assert loud.mean() > 0.3, loud.mean()  # speech in most frames, not a click or a hiss


def test_espeak_is_always_available():
    check_voices(["espeak:en-us"])
    assert "espeak:en-us" in voices.available_voices()


@pytest.mark.parametrize("voice", voices.VOICES)
def test_voice_says_a_sentence(voice):
    _require(voice)
    _speaks(synthesize(SENTENCE, voice))


@pytest.mark.parametrize("voice", _marked(["espeak:en-us", "espeak:en-gb-scotland+m4", *voices.VOICES[-8:]]))
def test_voice_is_deterministic_and_follows_speed(voice):
    _require(voice)
    base = synthesize(SENTENCE, voice)
    np.testing.assert_array_equal(base, synthesize(SENTENCE, voice))
    fast = synthesize(SENTENCE, voice, speed=1.25)
    assert 0.7 < fast.size / base.size < 0.92  # neural engines scale only the phonemes, not the edge silence
    higher = synthesize(SENTENCE, voice, pitch_semitones=2.0)
    assert 0.88 < higher.size / base.size < 1.08  # pitch shifts keep the duration


def test_unknown_voice_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid voices: espeak:en-us, ") as e:
        synthesize(SENTENCE, "flite:nobody")
    assert "piper:joe" in str(e.value)
    with pytest.raises(ValueError, match="'espeak:klingon'"):
        check_voices(["espeak:en-us", "espeak:klingon"])


def test_missing_binaries_name_each_voice_and_its_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no flite, no festival
    with pytest.raises(VoiceUnavailableError) as e:
        check_voices(["espeak:en-us", "flite:awb", "festival:ked"])
    message = str(e.value)
    assert "espeak" not in message
    assert "flite:awb" in message and "apt-get install flite" in message
    assert "festival:ked" in message and "apt-get install festival festvox-kdlpc16k" in message
    assert "make voices" in message
    with pytest.raises(VoiceUnavailableError, match="flite:slt.*apt-get install flite"):
        synthesize(SENTENCE, "flite:slt")
    assert not any(v.startswith(("flite:", "festival:")) for v in voices.available_voices())


def test_missing_python_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hibari" else real(name, *a))
    with pytest.raises(VoiceUnavailableError, match=r"hibari:heart: .*hibari.*pip install hibari-tts"):
        check_voices(["hibari:heart"])


@pytest.mark.parametrize("kwargs, key", [({"speed": 3.0}, "speed"), ({"pitch_semitones": -7}, "pitch_semitones")])
def test_out_of_range_controls_are_named(kwargs, key):
    with pytest.raises(ValueError, match=rf"{key} must be in \["):
        synthesize(SENTENCE, "espeak:en-us", **kwargs)


def _say(voice: str) -> np.ndarray:
    return synthesize(SENTENCE, voice)


@pytest.mark.slow
def test_parallel_workers_give_the_serial_samples():
    pool_voices = [v for v in ("espeak:en-us", "flite:slt", "festival:ked", "hibari:heart", "piper:joe")
                   if v in voices.available_voices()] * 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parallel = pool.map(_say, pool_voices)
    for voice, audio in zip(pool_voices, parallel):
        np.testing.assert_array_equal(audio, synthesize(SENTENCE, voice))
