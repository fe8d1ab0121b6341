"""Tests of the committed natural-English sentences: the file loads, its statistics are sane, and neither it nor
the grammar's sentences share a sentence with any evaluation set."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sota.data import grammar, make_sentences
from sota.data.sentences import (asterisk_transcripts, natural_sentences, normalize_text, overlap, split_sentences,
                                 text_stats)

REALDEV = Path(__file__).parents[2] / "shared" / "realdev"
MANIFESTS = [REALDEV / "asr" / "manifest.json", REALDEV / "aac" / "manifest.json"]


@pytest.fixture(scope="module")
def checked_text() -> list[str]:
    """Every committed sentence and the grammar sentences the synthetic corpus draws from (a 3000-sentence sample)."""
    return [*natural_sentences(), *grammar.sentences(3000, np.random.default_rng(0))]


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"annotation": rows}))
    return path


def test_committed_file_loads_and_is_sane() -> None:
    sentences = natural_sentences()
    assert 20_000 <= len(sentences) <= 60_000
    assert len({normalize_text(s) for s in sentences}) == len(sentences), "duplicates after normalization"
    assert all(s[0].isupper() and s[-1] in ".!?" for s in sentences)
    assert not any(ch.isdigit() or ch in '"()[]&%$#@/`' for s in sentences for ch in s)
    assert not any(set(normalize_text(s).split()) & make_sentences.BLOCKLIST for s in sentences)
    path = Path(make_sentences.__file__).parent / "text" / "sentences.txt.gz"
    assert path.stat().st_size < 3_000_000
    assert gzip.decompress(path.read_bytes()).decode().splitlines() == list(sentences)


def test_statistics_in_range() -> None:
    stats = text_stats(natural_sentences())
    wps = stats["words_per_sentence"]
    assert (wps["min"], wps["max"]) == (make_sentences.MIN_WORDS, make_sentences.MAX_WORDS)
    assert 5 <= wps["mean"] <= 12 and 5 <= wps["median"] <= 12
    assert stats["distinct_words"] > 10_000
    # The point of the file: most of its vocabulary is words the grammar never says.
    assert stats["share_distinct_words_outside_grammar"] > 0.8
    assert 0.2 < stats["share_running_words_outside_grammar"] < 0.9


def test_text_stats_values() -> None:
    stats = text_stats(["The cat sat.", "A dog, the cat!"], vocabulary=["the", "cat", "a"])
    assert stats["sentences"] == 2 and stats["distinct_words"] == 5 and stats["words"] == 7
    assert stats["words_per_sentence"]["mean"] == 3.5
    assert stats["distinct_words_outside_grammar"] == 2  # sat, dog
    assert stats["share_running_words_outside_grammar"] == round(2 / 7, 4)
    with pytest.raises(ValueError):
        text_stats([])


def test_loader_is_deterministic_and_cached() -> None:
    first = natural_sentences()
    assert natural_sentences() is first
    natural_sentences.cache_clear()
    assert natural_sentences() == first


def test_normalize_text() -> None:
    assert normalize_text("  Don't   STOP -- the ex-wife's car!\n") == "dont stop the ex wifes car"
    assert split_sentences("Hello there. How are you?") == ["hello there how are you", "hello there", "how are you"]


def test_overlap_detects_a_known_sentence(tmp_path: Path) -> None:
    known = natural_sentences()[123]
    manifest = _manifest(tmp_path, [
        {"path": "a.wav", "text": "Something else entirely. " + known.upper(), "task": "asr"},
        {"path": "b.wav", "text": "a caption", "task": "aac", "references": ["another caption", "x"]},
    ])
    assert overlap(natural_sentences(), [manifest]) == {normalize_text(known)}
    assert overlap(["Another caption!"], [manifest]) == {"another caption"}
    assert overlap(["Nothing like it."], [manifest], texts=["nothing, like it"]) == {"nothing like it"}
    assert overlap(["Not there at all."], [manifest]) == set()


@pytest.mark.skipif(not all(p.is_file() for p in MANIFESTS),
                    reason=f"the realdev evaluation manifests ({REALDEV}/{{asr,aac}}/manifest.json) are absent")
def test_no_overlap_with_realdev(checked_text: list[str]) -> None:
    assert overlap(checked_text, MANIFESTS) == set()


def test_no_overlap_with_asterisk_prompts(checked_text: list[str]) -> None:
    try:
        prompts = asterisk_transcripts()
    except FileNotFoundError as e:
        pytest.skip(f"Asterisk prompt transcripts not installed (apt-get install asterisk-core-sounds-en): {e}")
    assert len(prompts) > 100
    assert overlap(checked_text, texts=prompts) == set()


def test_builder_filters(tmp_path: Path) -> None:
    lexicon = frozenset("the dog barked at a tall man he ran home quickly an overflowing tub stages of growth".split())
    verbs = frozenset({"barked", "ran"})
    examples = ["the dog barked at the man", "an overflowing tub", "he ran home quickly", "the dog barked at 3",
                "the dog barked at NATO", "the dog", "He ran home quickly!"]
    kept, dropped = make_sentences.select(examples, lexicon, verbs, held_out={"he ran home quickly"})
    assert kept == ["The dog barked at the man."]
    assert dropped["not_a_clause"] == 1 and dropped["unspeakable"] == 2 and dropped["length"] == 1
    assert dropped["held_out"] == 2
    out = tmp_path / "s.txt.gz"
    make_sentences.write_gzip(out, ["b", "a"])
    first = out.read_bytes()
    make_sentences.write_gzip(out, ["b", "a"])
    assert out.read_bytes() == first and gzip.decompress(first) == b"b\na\n"
