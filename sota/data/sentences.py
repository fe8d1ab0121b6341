"""Natural English sentences for the synthetic speech corpus (the committed `text/sentences.txt.gz`), with the
normalization and overlap checks that keep them apart from the evaluation sets."""

from __future__ import annotations

import gzip
import json
import re
import statistics
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

from sota.data import grammar

__all__ = ["DATA_FILE", "natural_sentences", "normalize_text", "split_sentences", "manifest_texts",
           "asterisk_transcripts", "overlap", "text_stats"]

DATA_FILE = "text/sentences.txt.gz"
# Debian installs the prompts' transcripts as documentation; older layouts kept a plain copy next to the sounds.
ASTERISK_TRANSCRIPTS = (Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"),
                        Path("/usr/share/asterisk/sounds/en/core-sounds-en.txt"))

_DASHES = re.compile(r"[-\u2010-\u2015/]")  # "ex-wife" and "ex wife" are the same words to a listener
_NOT_WORD = re.compile(r"[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@cache
def natural_sentences() -> tuple[str, ...]:
    """Every committed sentence, in the file's order (a fixed hash order, so any prefix mixes all topics)."""
    data = resources.files("sota.data").joinpath(DATA_FILE).read_bytes()
    return tuple(gzip.decompress(data).decode("utf-8").splitlines())


def normalize_text(s: str) -> str:
    """Lowercase, dashes to spaces, other punctuation removed, whitespace collapsed: the form overlaps compare."""
    return " ".join(_NOT_WORD.sub("", _DASHES.sub(" ", s.lower()).replace("_", " ")).split())


def split_sentences(text: str) -> list[str]:
    """`text` whole and each of its sentences, normalized; a multi-sentence reference must not hide one of ours."""
    parts = [text, *_SENTENCE_END.split(text)] if _SENTENCE_END.search(text) else [text]
    return [n for n in dict.fromkeys(normalize_text(p) for p in parts) if n]


def manifest_texts(path: str | Path) -> set[str]:
    """Normalized `text` and `references` (and their sentences) of a SALMONN-style manifest."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["annotation"]
    out: set[str] = set()
    for row in rows:
        refs = row.get("references") or []
        for text in [row.get("text") or "", *([refs] if isinstance(refs, str) else refs)]:
            out.update(split_sentences(text))
    return out


def asterisk_transcripts(path: str | Path | None = None) -> list[str]:
    """The spoken text of each Asterisk prompt (`name: transcript` lines; `[...]` marks tones and symbols).

    Raises FileNotFoundError naming the Debian package when the transcripts are not installed.
    """
    candidates = [Path(path)] if path is not None else list(ASTERISK_TRANSCRIPTS)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"none of {', '.join(map(str, candidates))} exists; install the prompts' "
                                f"transcripts with: apt-get install asterisk-core-sounds-en")
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        if line.startswith(";") or ":" not in line:
            continue
        said = line.split(":", 1)[1].strip()
        if said and "[" not in said:
            out.append(said)
    return out


def overlap(sentences: Iterable[str], manifest_paths: Iterable[str | Path] = (),
            texts: Iterable[str] = ()) -> set[str]:
    """Normalized `sentences` that equal a manifest's `text`/`references` (or one of their sentences) or one of
    the extra `texts` (e.g. `asterisk_transcripts()`)."""
    held_out: set[str] = set()
    for path in manifest_paths:
        held_out |= manifest_texts(path)
    for text in texts:
        held_out.update(split_sentences(text))
    return {n for n in map(normalize_text, sentences) if n in held_out}


def text_stats(sentences: Iterable[str], vocabulary: Iterable[str] | None = None) -> dict:
    """Counts and length statistics of `sentences` (words after `normalize_text`); with `vocabulary` (default:
    the grammar's), the share of distinct words and of running words outside it."""
    vocab = set(grammar.VOCABULARY if vocabulary is None else vocabulary)
    lengths, counts = [], {}
    for s in sentences:
        words = normalize_text(s).split()
        lengths.append(len(words))
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    if not lengths:
        raise ValueError("text_stats needs at least one sentence")
    q = statistics.quantiles(lengths, n=20, method="inclusive") if len(lengths) > 1 else [lengths[0]] * 19
    tokens = sum(counts.values())
    outside = [w for w in counts if w not in vocab]
    return {
        "sentences": len(lengths),
        "distinct_words": len(counts),
        "words": tokens,
        "words_per_sentence": {"mean": round(statistics.fmean(lengths), 2), "median": statistics.median(lengths),
                               "p5": q[0], "p25": q[4], "p75": q[14], "p95": q[18],
                               "min": min(lengths), "max": max(lengths)},
        "distinct_words_outside_grammar": len(outside),
        "share_distinct_words_outside_grammar": round(len(outside) / len(counts), 4),
        "share_running_words_outside_grammar": round(sum(counts[w] for w in outside) / tokens, 4),
    }
