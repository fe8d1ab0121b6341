"""Tests for sota.metrics: exact WER/CER arithmetic, normalization, and CIDEr-D against aac-metrics' docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sota.metrics import aac as aac_module
from sota.metrics import aac_scores, asr_scores, caption_scores, normalize, ptb_like_tokenize

# ----------------------------------------------------------------------------------------------- ASR


def test_wer_of_known_pair_is_exact() -> None:
    scores = asr_scores(["the cat sat on the mat"], ["the cat sit on mat"])
    # 1 substitution (sat->sit) + 1 deletion (the) over 6 reference words.
    assert scores.metrics["asr/wer"] == pytest.approx(2 / 6, abs=1e-12)
    row = scores.rows[0]
    assert (row["substitutions"], row["deletions"], row["insertions"], row["hits"]) == (1, 1, 0, 4)
    assert scores.metrics["asr/n"] == 1
    assert scores.metrics["asr/ref_words"] == 6


def test_cer_counts_characters_including_spaces() -> None:
    # "abc de" vs "abd de": 1 substitution over 6 reference characters (jiwer counts the space).
    assert asr_scores(["abc de"], ["abd de"]).metrics["asr/cer"] == pytest.approx(1 / 6)


def test_normalizer_applied_to_both_sides() -> None:
    refs = ["Mr. Smith said: Hello, World!", "it's TWENTY five dollars."]
    hyps = ["mister smith said hello world", "It is $25"]
    scores = asr_scores(refs, hyps)
    assert scores.metrics["asr/wer"] == 0.0
    assert scores.metrics["asr/cer"] == 0.0
    assert normalize("Mr. Smith") == "mister smith"
    assert scores.rows[0]["reference_norm"] == scores.rows[0]["hypothesis_norm"]


def test_corpus_wer_differs_from_mean_of_utterances() -> None:
    # Plain words on purpose: Whisper's normalizer would merge spelled-out numbers into digits.
    long_utt = "the quick brown fox jumps over the lazy old"  # 9 words
    refs = ["hello", long_utt]
    hyps = ["goodbye", long_utt]
    scores = asr_scores(refs, hyps)
    per_utt = [row["wer"] for row in scores.rows]
    assert per_utt == [1.0, 0.0]
    mean_of_utts = sum(per_utt) / len(per_utt)  # 0.5: what we must NOT report
    assert scores.metrics["asr/wer"] == pytest.approx(1 / 10)  # 1 error / 10 reference words
    assert scores.metrics["asr/wer"] != pytest.approx(mean_of_utts)


def test_empty_hypothesis_is_all_deletions() -> None:
    scores = asr_scores(["hello world", "good morning"], ["", "good morning"])
    row = scores.rows[0]
    assert row["wer"] == 1.0
    assert row["deletions"] == 2 and row["hits"] == 0
    assert scores.metrics["asr/wer"] == pytest.approx(2 / 4)


def test_reference_normalizing_to_empty_is_skipped_and_counted() -> None:
    scores = asr_scores(["Hmm.", "the cat"], ["uh huh yes", "the cat"])
    assert scores.metrics["asr/skipped_empty_refs"] == 1
    assert scores.metrics["asr/n"] == 1
    assert scores.metrics["asr/wer"] == 0.0  # the skipped utterance's words are not insertions
    assert scores.rows[0]["skipped"] is True and scores.rows[0]["wer"] is None
    with pytest.raises(ValueError, match="normalize to empty"):
        asr_scores(["[noise]"], ["anything"])


def test_asr_mismatched_counts_and_no_references_raise() -> None:
    with pytest.raises(ValueError, match=r"2 references but 1 hypotheses"):
        asr_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="needs references"):
        asr_scores([], [])


# ----------------------------------------------------------------------------------------------- AAC

# The example of aac-metrics 0.5.4's README, section "Evaluate a specific metric" (shipped as the
# package long description: .venv/lib/python3.11/site-packages/aac_metrics-0.5.4.dist-info/METADATA,
# lines 127-142). After preprocess_mono_sents/preprocess_mult_sents (PTB tokenizer) it documents
#   cider_d(...) -> {"cider_d": tensor(0.9614)}, sents {"cider_d": tensor([1.3641, 0.5587])}
# and its `evaluate` example on the same captions (lines 104-113) documents bleu_1 tensor(0.4278).
README_CANDIDATES = ["a man is speaking", "rain falls"]
README_MULT_REFERENCES = [
    ["a man speaks.", "someone speaks.", "a man is speaking while a bird is chirping in the background"],
    ["rain is falling hard on a surface"],
]


@pytest.fixture
def no_jars(tmp_path: Path) -> Path:
    """An empty aac-metrics cache dir: no METEOR/SPICE jars, whatever this machine has installed."""
    return tmp_path


def test_cider_d_matches_aac_metrics_documented_example(no_jars: Path) -> None:
    result = aac_scores(README_CANDIDATES, README_MULT_REFERENCES, cache_path=no_jars)
    assert result.metrics["aac/cider_d"] == pytest.approx(0.9614, abs=5e-5)
    assert [row["cider_d"] for row in result.rows] == pytest.approx([1.3641, 0.5587], abs=5e-5)
    assert result.metrics["aac/bleu_1"] == pytest.approx(0.4278, abs=5e-5)
    assert result.metrics["aac/official_v1_1"] == pytest.approx(100 * result.metrics["aac/cider_d"])
    # The documented numbers come from Java PTB tokenization; ours yields the same tokens here.
    assert result.rows[0]["references_tok"][:2] == ["a man speaks", "someone speaks"]


def test_caption_scores_keys_and_missing_jars_notes(no_jars: Path) -> None:
    metrics = caption_scores(README_CANDIDATES, README_MULT_REFERENCES, cache_path=no_jars)
    for key in ("aac/cider_d", "aac/bleu_1", "aac/bleu_2", "aac/bleu_3", "aac/bleu_4", "aac/rouge_l"):
        assert isinstance(metrics[key], float)
    assert metrics["aac/meteor"] is None and metrics["aac/spice"] is None
    assert metrics["aac/spider"] is None
    assert "meteor-1.5.jar" in metrics["aac/meteor_note"] and str(no_jars) in metrics["aac/meteor_note"]
    note = metrics["aac/spider_note"]
    assert "spice-1.0.jar" in note and "stanford-corenlp-3.6.0.jar" in note
    assert "aac-metrics-download" in note
    assert metrics["aac/official_v1_1"] == pytest.approx(100 * metrics["aac/cider_d"])


def _fake_jars(cache: Path) -> None:
    files = [*aac_module._METEOR_FILES, aac_module._SPICE_JAR]
    files += [f"{aac_module._SPICE_LIB_DIR}/{name}" for name in aac_module._SPICE_LIB_JARS]
    for rel in files:
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).touch()
    (cache / aac_module._SPICE_CACHE_DIR).mkdir(parents=True)


def test_missing_java_gives_notes_not_crash(tmp_path: Path) -> None:
    # Jars "present" (empty files, never run) but no Java executable at the given path.
    _fake_jars(tmp_path)
    metrics = caption_scores(
        README_CANDIDATES, README_MULT_REFERENCES, cache_path=tmp_path, java_path=tmp_path / "no-java"
    )
    assert metrics["aac/meteor"] is None and metrics["aac/spider"] is None
    assert "no Java executable" in metrics["aac/meteor_note"]
    assert "no Java executable" in metrics["aac/spider_note"]


def test_java_check_monkeypatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_jars(tmp_path)
    monkeypatch.setattr(aac_module, "_java_problem", lambda java: "simulated: no Java on this machine")
    metrics = caption_scores(README_CANDIDATES, README_MULT_REFERENCES, cache_path=tmp_path)
    assert metrics["aac/spice"] is None and metrics["aac/spider"] is None
    assert "simulated: no Java" in metrics["aac/spider_note"]
    assert "simulated: no Java" in metrics["aac/meteor_note"]


def test_caption_input_errors(no_jars: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 clips"):
        caption_scores(["a dog barks"], [["a dog is barking"]], cache_path=no_jars)
    with pytest.raises(ValueError, match=r"2 candidates but 1 reference lists"):
        caption_scores(["a", "b"], [["a"]], cache_path=no_jars)
    with pytest.raises(ValueError, match="clip 1 has no non-empty reference"):
        caption_scores(["a dog", "rain"], [["a dog barks"], ["..."]], cache_path=no_jars)


def test_empty_candidate_scores_zero(no_jars: Path) -> None:
    result = aac_scores(["", "rain falls"], [["a dog barks"], ["rain falls hard"]], cache_path=no_jars)
    assert result.rows[0]["cider_d"] == 0.0 and result.rows[0]["rouge_l"] == 0.0


# Pairs recorded from the real pipeline, aac_metrics.utils.tokenization.preprocess_mono_sents with
# stanford-corenlp-3.4.1.jar (from the pycocoevalcap 1.2 wheel) on OpenJDK 17, in a scratch cache dir.
PTB_RECORDED = [
    ("A man speaks.", "a man speaks"),
    ("Mr. Smith isn't here, it's raining!", "mr. smith is n't here it 's raining"),
    ("The dog's bark -- loud; very loud...", "the dog 's bark loud very loud"),
    ('"Quoted" words (in parens) and \'single quotes\'',
     "quoted words -lrb- in parens -rrb- and single quotes"),
    ("A high-pitched beep, then a low-pitched hum?", "a high-pitched beep then a low-pitched hum"),
    ("The dogs' owners can't stop; they won't.", "the dogs owners ca n't stop they wo n't"),
    ("rock'n'roll music plays $5 100% e.g. etc.", "rock 'n' roll music plays $ 5 100 % e.g. etc."),
    ("Water drips... drip-drop; splash!!", "water drips drip-drop splash !!"),
    ("About 1,000 people at 10:30 o'clock", "about 1,000 people at 10:30 o'clock"),
    ("The U.S. army marches. A.", "the u.s. army marches a."),
    ("A dog\u2019s bark and \u201ccurly quotes\u201d here", "a dog 's bark and curly quotes here"),
    ("A can't-miss sound, isn't it?", "a ca n't miss sound is n't it"),
    ("Rain falls on a tin roof; thunder rumbles in the distance.",
     "rain falls on a tin roof thunder rumbles in the distance"),
]


@pytest.mark.parametrize(("sentence", "expected"), PTB_RECORDED)
def test_ptb_like_tokenize_matches_recorded_ptb(sentence: str, expected: str) -> None:
    assert ptb_like_tokenize(sentence) == expected
    assert ptb_like_tokenize(expected) == expected  # idempotent on already tokenized text


@pytest.mark.parametrize(("version", "ok"), [("1.8.0_292", True), ("17.0.15", True), ("21.0.1", False)])
def test_java_version_range(tmp_path: Path, version: str, ok: bool) -> None:
    # A fake `java` that prints a version banner the way the JDK does (on stderr).
    fake = tmp_path / "java"
    fake.write_text(f'#!/bin/sh\necho \'openjdk version "{version}" 2024-01-01\' >&2\n')
    fake.chmod(0o755)
    problem = aac_module._java_problem(str(fake))
    assert (problem is None) == ok
    if not ok:
        assert "outside the range" in problem
