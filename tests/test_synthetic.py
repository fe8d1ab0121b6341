"""Tests of the built-in synthetic corpus: TTS, grammar, sound scenes and the cached on-disk build."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sota.data import grammar, real_sounds, scenes, sentences, synthetic, tts
from sota.data import voices as voice_pool
from sota.data.corpus_spec import DEFAULT_VOICES, SPLITS, SyntheticCorpusSpec, fingerprint, usable_voices
from sota.data.synthetic import build_corpus

SMALL = SyntheticCorpusSpec(seed=3, asr_train=8, asr_val=3, asr_test=4, aac_train=4, aac_val=2, aac_test=3,
                            max_clip_s=4.0)
WORDS_ONLY = re.compile(r"^[a-z]+( [a-z]+)*$")
TRANSCRIPT = re.compile(r"^[a-z']+( [a-z']+)*$")


def _rows(manifest: Path) -> list[dict]:
    return json.loads(manifest.read_text())["annotation"]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    first = build_corpus(SMALL, tmp_path_factory.mktemp("a"), workers=2)  # shards built by two worker processes
    second = build_corpus(SMALL, tmp_path_factory.mktemp("b"), workers=1)  # everything in this process
    return first, second


# --------------------------------------------------------------------------------------------------- corpus build
def test_build_is_byte_deterministic(two_builds):
    first, second = two_builds
    for split in SPLITS:
        assert first[split].read_bytes() == second[split].read_bytes()
    root_a, root_b = first["train"].parent, second["train"].parent
    wavs_a = sorted(p.relative_to(root_a) for p in root_a.rglob("*.wav"))
    wavs_b = sorted(p.relative_to(root_b) for p in root_b.rglob("*.wav"))
    assert wavs_a == wavs_b and len(wavs_a) == 8 + 3 + 4 + 4 + 2 + 3
    for rel in wavs_a:
        assert (root_a / rel).read_bytes() == (root_b / rel).read_bytes(), rel


def test_manifest_layout(two_builds):
    manifests, _ = two_builds
    assert set(manifests) == {"train", "val", "test"}
    assert manifests["train"].parent.name == fingerprint(SMALL)
    spoken = {v for v, _ in SMALL.voices}
    for split, path in manifests.items():
        rows = _rows(path)
        assert sum(r["task"] == "asr" for r in rows) == SMALL.count("asr", split)
        assert sum(r["task"] == "aac" for r in rows) == SMALL.count("aac", split)
        for row in rows:
            assert row["path"].startswith(f"audio/{split}/{row['task']}_")
            info = sf.info(str(path.parent / row["path"]))
            assert row["duration"] == round(info.frames / 16000, 4)
            assert (TRANSCRIPT if row["task"] == "asr" else WORDS_ONLY).match(row["text"]), row["text"]
            assert row["task"] == "aac" or row["speaker"] in spoken


def test_clips_are_16k_mono_pcm_within_max_clip(two_builds):
    manifests, _ = two_builds
    for path in manifests.values():
        for row in _rows(path):
            info = sf.info(str(path.parent / row["path"]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert 0.5 <= info.frames / 16000 <= SMALL.max_clip_s


def test_asr_sentences_are_disjoint_across_splits(two_builds):
    manifests, _ = two_builds
    texts = {s: [r["text"] for r in _rows(p) if r["task"] == "asr"] for s, p in manifests.items()}
    natural = {synthetic.transcript(x) for x in sentences.natural_sentences()}
    for items in texts.values():
        assert len(set(items)) == len(items)
        # every transcript is a natural sentence or a grammar sentence
        assert all(t in natural or set(t.split()) <= set(grammar.VOCABULARY) for t in items)
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["train"]) & set(texts["val"])
    assert not set(texts["val"]) & set(texts["test"])


def test_aac_rows_have_five_distinct_references(two_builds):
    manifests, _ = two_builds
    for path in manifests.values():
        for row in (r for r in _rows(path) if r["task"] == "aac"):
            refs = row["references"]
            assert len(refs) == 5 and len(set(refs)) == 5
            assert row["text"] == refs[0]
            assert all(WORDS_ONLY.match(ref) for ref in refs), refs


def test_speech_clips_are_not_silent(two_builds):
    manifests, _ = two_builds
    for row in (r for r in _rows(manifests["test"]) if r["task"] == "asr"):
        audio, _ = sf.read(str(manifests["test"].parent / row["path"]))
        assert np.sqrt(np.mean(audio**2)) > 0.01


def test_cache_hit_is_fast_and_does_not_rebuild(two_builds):
    manifests, _ = two_builds
    root = manifests["train"].parent.parent
    wav = next(manifests["train"].parent.rglob("*.wav"))
    mtime = wav.stat().st_mtime_ns
    start = time.perf_counter()
    again = build_corpus(SMALL, root)
    assert time.perf_counter() - start < 0.5
    assert again == manifests
    assert wav.stat().st_mtime_ns == mtime
    assert not list(root.glob(".*partial*"))


@pytest.mark.parametrize("module, function, workers", [(scenes, "make_scene", 1), (voice_pool, "synthesize", 1)])
def test_interrupted_build_leaves_no_corpus(tmp_path, monkeypatch, module, function, workers):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, function, interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(SMALL, tmp_path, workers=workers)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------- the spec
@pytest.mark.parametrize("field, value", [
    ("asr_train", -1), ("aac_test", 1.5), ("seed", -3), ("max_clip_s", 0), ("max_clip_s", 100.0),
    ("noise_snr_db", (40.0, 10.0)), ("speed_range", (0.5, 1.0)), ("speed_range", (1.0,)),
    ("pitch_semitones", (0, 10)), ("voices", {"nope:x": 1}), ("voices", {"flite:awb": -1}), ("natural_text", 1.5),
    ("natural_repeats", 0), ("on_missing_voice", "maybe"), ("augment", {"reverb_p": 2.0}),
])
def test_spec_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticCorpusSpec(**{field: value})


def test_natural_repeats_say_each_training_sentence_again_and_keep_splits_apart():
    spec = SyntheticCorpusSpec(asr_train=400, asr_val=20, asr_test=40, natural_text=0.8, natural_repeats=3)
    pools = synthetic._sentence_pools(spec)
    train = pools["train"][0] + pools["train"][1]
    natural = set(synthetic._natural_pool(spec))
    counts = Counter(t for t in train if t in natural)
    assert len(pools["train"][0]) == 400 and max(counts.values()) == 3
    assert sum(counts.values()) == round(0.8 * len(train))  # the share is of utterances, not of distinct sentences
    held_out = {t for split in ("val", "test") for t in pools[split][0] + pools[split][1]}
    assert not held_out & set(train)
    assert all(n == 1 for n in Counter(pools["test"][0]).values())
    # A corpus too large for the committed sentences says which knobs make it fit.
    with pytest.raises(ValueError, match="natural_repeats"):
        synthetic._sentence_pools(SyntheticCorpusSpec(asr_train=40000, max_clip_s=10.0, natural_text=0.9))


def test_spec_normalises_config_lists_and_fingerprints_stably():
    from_lists = SyntheticCorpusSpec(speed_range=[0.9, 1.1], noise_snr_db=[15, 40], max_clip_s=5,
                                     voices=dict(DEFAULT_VOICES), augment={"speed_p": 0.0})
    assert from_lists == SyntheticCorpusSpec()
    assert fingerprint(from_lists) == fingerprint(SyntheticCorpusSpec())
    assert fingerprint(SyntheticCorpusSpec(seed=1)) != fingerprint(SyntheticCorpusSpec())
    assert fingerprint(SyntheticCorpusSpec(augment=None)) != fingerprint(SyntheticCorpusSpec())


def test_a_missing_voice_stops_the_build_naming_it_or_is_left_out_with_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no flite, no festival on PATH
    spec = SyntheticCorpusSpec(asr_train=2, asr_val=1, asr_test=1, aac_train=0, aac_val=0, aac_test=0,
                               voices={"flite:awb": 1, "espeak:en-us": 1}, augment=None)
    with pytest.raises(voice_pool.VoiceUnavailableError, match="flite:awb.*apt-get install flite"):
        build_corpus(spec, tmp_path / "corpus", workers=1)
    assert not (tmp_path / "corpus").exists() or not any((tmp_path / "corpus").iterdir())
    skip = SyntheticCorpusSpec(**{**spec.__dict__, "on_missing_voice": "skip"})
    assert usable_voices(skip) == (("espeak:en-us", 1.0),)
    rows = _rows(build_corpus(skip, tmp_path / "corpus", workers=1)["train"])
    assert {r["speaker"] for r in rows} == {"espeak:en-us"}


# -------------------------------------------------------------------------------------------------------- grammar
def test_vocabulary_is_large_and_covers_output():
    assert len(grammar.VOCABULARY) >= 500
    assert list(grammar.VOCABULARY) == sorted(set(grammar.VOCABULARY))
    out = grammar.sentences(3000, np.random.default_rng(0))
    assert len(set(out)) == 3000
    used = {w for s in out for w in s.split()}
    assert used <= set(grammar.VOCABULARY)
    assert len(used) >= 500
    assert all(4 <= len(s.split()) <= 14 and WORDS_ONLY.match(s) for s in out)
    assert len(grammar.SHAPES) >= 8


def test_sentences_are_seeded_and_prefix_stable():
    a = grammar.sentences(200, np.random.default_rng(7), max_words=9)
    b = grammar.sentences(50, np.random.default_rng(7), max_words=9)
    assert a[:50] == b
    assert all(len(s.split()) <= 9 for s in a)
    assert a != grammar.sentences(200, np.random.default_rng(8), max_words=9)


def test_articles_agree():
    for s in grammar.sentences(2000, np.random.default_rng(1)):
        words = s.split()
        for w, nxt in zip(words, words[1:]):
            if w == "a":
                assert nxt[0] not in "aeiou", s
            if w == "an":
                assert nxt[0] in "aeiou", s


# --------------------------------------------------------------------------------------------------------- scenes
def test_scenes_cover_all_event_types():
    assert len(scenes.EVENT_TYPES) >= 10
    seen = set()
    for i in range(200):
        plan = scenes.plan_scene(np.random.default_rng(i), 4.0)
        assert 1 <= len(plan.events) <= 3
        seen.update(e.kind for e in plan.events)
    # Labels of installed real recordings (sota.data.real_sounds) are event types too.
    assert set(scenes.EVENT_TYPES) <= seen <= set(scenes.EVENT_TYPES) | set(real_sounds.PHRASES)


@pytest.mark.parametrize("kind", scenes.EVENT_TYPES)
def test_each_event_type_renders_and_captions(kind):
    audio, captions = scenes.make_scene(np.random.default_rng(0), 2.5, [kind])
    assert audio.dtype == np.float32 and audio.shape == (40000,)
    assert np.abs(audio).max() <= 1.0 and np.sqrt(np.mean(audio**2)) > 0.005
    assert len(captions) == 5 and len(set(captions)) == 5
    assert all(WORDS_ONLY.match(c) for c in captions), captions


@pytest.mark.parametrize("kind", ["beeps", "knocking", "noise_burst"])
def test_counted_events_sound_as_often_as_captioned(kind):
    for seed in range(6):
        rng = np.random.default_rng(seed)
        plan = scenes.plan_scene(rng, float(rng.uniform(1.0, 4.0)), [kind])
        audio = scenes.render_scene(plan, rng)
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)  # 10 ms
        loud = np.sqrt((frames**2).mean(axis=1)) > 0.25 * np.sqrt((frames**2).mean(axis=1)).max()
        onsets = int(np.sum(loud[1:] & ~loud[:-1]) + loud[0])
        assert onsets == plan.events[0].count, (seed, plan)
        count = plan.events[0].count
        if count > 1:
            words = {grammar.number_words(count)[0], "twice" if count == 2 else "times"}
            assert any(w in c.split() for c in scenes.caption_scene(plan, rng) for w in words)


def test_scene_is_deterministic():
    a, ca = scenes.make_scene(np.random.default_rng(11), 4.2)
    b, cb = scenes.make_scene(np.random.default_rng(11), 4.2)
    assert np.array_equal(a, b) and ca == cb


# ------------------------------------------------------------------------------------------------------------ TTS
def test_speech_is_non_silent_with_plausible_length():
    text = "the old farmer painted a blue fence near the river"
    audio = tts.synthesize(text, "en-us", rate=175)
    assert audio.dtype == np.float32 and audio.ndim == 1
    n_words = len(text.split())
    seconds = len(audio) / tts.SAMPLE_RATE
    assert 0.15 * n_words < seconds < 0.7 * n_words
    assert np.sqrt(np.mean(audio**2)) > 0.02
    assert len(tts.synthesize(text, "en-us", rate=100)) > 1.3 * len(audio)


def test_every_listed_voice_works():
    for voice in tts.VOICES:
        audio = tts.synthesize("seven red boats", voice)
        assert len(audio) > 0.3 * tts.SAMPLE_RATE and np.abs(audio).max() > 0.05, voice


def test_unknown_voice_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="voice"):
        tts.synthesize("hello", "en-gb")  # not a voice name in this eSpeak data set (plain "en" is British)
    with pytest.raises(ValueError, match="rate"):
        tts.synthesize("hello", rate=1000)
    with pytest.raises(ValueError):
        tts.synthesize("   ")


def test_missing_library_gives_a_clear_error(monkeypatch, tmp_path):
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libespeak-ng.so"))
    with pytest.raises(tts.TTSUnavailableError, match="libespeak-ng"):
        tts._Engine()


def test_reset_makes_synthesis_reproducible():
    tts.reset()
    first = [tts.synthesize("where did anna leave her umbrella", v) for v in tts.VOICES]
    for voice in tts.VOICES:  # disturb every piece of hidden state: voices, rates, pitch, noise generators
        tts.synthesize("something else entirely", voice, rate=300, pitch=5)
    tts.reset()
    again = [tts.synthesize("where did anna leave her umbrella", v) for v in tts.VOICES]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_build_is_identical_in_a_fresh_process(two_builds, tmp_path):
    manifests, _ = two_builds
    script = (
        "import sys, numpy as np\n"
        "from sota.data import tts, scenes\n"
        "from sota.data.augment import AugmentConfig\n"
        "from sota.data.synthetic import SyntheticCorpusSpec, build_corpus\n"
        "tts.synthesize('warm up with another voice', 'en+f4', rate=260)\n"
        f"build_corpus({SMALL!r}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120,
                   cwd=Path(__file__).resolve().parents[1])
    ours = manifests["train"].parent
    theirs = tmp_path / ours.name
    files = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file() and p.name != "DONE")
    assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file() and p.name != "DONE")
    for rel in files:
        assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel


# ----------------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_a_corpus_of_every_voice_builds_in_worker_processes(tmp_path):
    start = time.perf_counter()
    manifests = build_corpus(SyntheticCorpusSpec(asr_train=300, aac_train=150), tmp_path)
    assert time.perf_counter() - start < 600
    rows = _rows(manifests["train"])
    assert len(rows) == 300 + 150
    assert {r["speaker"] for r in rows if r["task"] == "asr"} == {v for v, _ in SyntheticCorpusSpec().voices}
