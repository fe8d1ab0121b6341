"""ASR accuracy: corpus-level WER and CER (jiwer) after Whisper's English text normalization.

Both references and hypotheses are normalized, so casing, punctuation and spelled-out forms ("Mr." vs
"mister") do not count as errors; the corpus rates are total edits over total reference words/chars.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jiwer

__all__ = ["ASRScores", "asr_scores", "normalize"]

# Whisper's normalizer takes a British->American spelling map that the Whisper tokenizers ship as
# normalizer.json. transformers 5.x does not ship that file inside the package (it comes with the
# tokenizer files from the model hub, which is unreachable here), so we use an empty map: spelling
# variants such as "colour"/"color" are NOT unified and count as errors. Everything else Whisper's
# normalizer does (case, punctuation, contractions, titles, numbers, fillers) is applied.
_ENGLISH_SPELLING_MAPPING: dict[str, str] = {}


@functools.lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    # Built once: the constructor compiles a few hundred regexes (number normalizer).
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(_ENGLISH_SPELLING_MAPPING)


def normalize(text: str) -> str:
    """Whisper English normalization (lowercase, no punctuation, standard forms), stripped."""
    return _normalizer()(text).strip()


@dataclass
class ASRScores:
    """Corpus metrics (`asr/...` keys) and one row per utterance, in input order."""

    metrics: dict[str, float | int]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _chunk_counts(alignment: Sequence[Any]) -> dict[str, int]:
    """Hits/substitutions/deletions/insertions of one utterance from jiwer's alignment chunks."""
    counts = {"hits": 0, "substitutions": 0, "deletions": 0, "insertions": 0}
    for chunk in alignment:
        ref_len = chunk.ref_end_idx - chunk.ref_start_idx
        if chunk.type == "equal":
            counts["hits"] += ref_len
        elif chunk.type == "substitute":
            counts["substitutions"] += ref_len
        elif chunk.type == "delete":
            counts["deletions"] += ref_len
        elif chunk.type == "insert":
            counts["insertions"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        else:  # pragma: no cover - jiwer has exactly these four chunk types
            raise ValueError(f"unknown jiwer alignment chunk type {chunk.type!r}")
    return counts


def _rate(counts: dict[str, int]) -> float:
    n_ref = counts["hits"] + counts["substitutions"] + counts["deletions"]
    return (counts["substitutions"] + counts["deletions"] + counts["insertions"]) / n_ref


def asr_scores(references: list[str], hypotheses: list[str]) -> ASRScores:
    """Corpus WER/CER of `hypotheses` against `references` (same order, one string per utterance).

    Rates are corpus-level: total edits / total reference words (chars for CER, spaces included as
    jiwer counts them), not the mean of per-utterance rates, so long utterances weigh more.
    A reference that normalizes to empty (e.g. "Hmm." or "[noise]") has no words to score against:
    it is left out of the totals and counted in `asr/skipped_empty_refs`; its row has `skipped=True`.
    An empty hypothesis is fine: all its reference words are deletions.
    `asr/n` is the number of utterances in the totals; `asr/ref_words`/`asr/ref_chars` are the
    denominators, so shards can be pooled exactly.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            f"asr_scores got {len(references)} references but {len(hypotheses)} hypotheses; "
            "they must pair up one-to-one"
        )
    if len(references) == 0:
        raise ValueError("asr_scores got no references: a WER/CER metric needs references")
    for kind, texts in (("reference", references), ("hypothesis", hypotheses)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{kind} {i} is {type(text).__name__}, expected str")

    norm_refs = [normalize(r) for r in references]
    norm_hyps = [normalize(h) for h in hypotheses]
    kept = [i for i, r in enumerate(norm_refs) if r]
    skipped = len(references) - len(kept)
    if not kept:
        raise ValueError(
            f"all {len(references)} references normalize to empty text: "
            "a WER/CER metric needs at least one non-empty reference"
        )

    # One jiwer call per granularity over the kept utterances: jiwer's own corpus totals give the
    # rates, and its per-utterance alignments give the rows (so rows always add up to the totals).
    ref_kept = [norm_refs[i] for i in kept]
    hyp_kept = [norm_hyps[i] for i in kept]
    words = jiwer.process_words(ref_kept, hyp_kept)
    chars = jiwer.process_characters(ref_kept, hyp_kept)

    rows: list[dict[str, Any]] = []
    by_index = {i: k for k, i in enumerate(kept)}
    for i, (ref, hyp) in enumerate(zip(references, hypotheses)):
        row: dict[str, Any] = {
            "id": i,
            "reference": ref,
            "hypothesis": hyp,
            "reference_norm": norm_refs[i],
            "hypothesis_norm": norm_hyps[i],
        }
        k = by_index.get(i)
        if k is None:
            row.update(skipped=True, wer=None, cer=None, hits=None, substitutions=None,
                       deletions=None, insertions=None)
        else:
            word_counts = _chunk_counts(words.alignments[k])
            char_counts = _chunk_counts(chars.alignments[k])
            row.update(skipped=False, wer=_rate(word_counts), cer=_rate(char_counts), **word_counts)
        rows.append(row)

    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    metrics: dict[str, float | int] = {
        "asr/wer": float(words.wer),
        "asr/cer": float(chars.cer),
        "asr/n": len(kept),
        "asr/skipped_empty_refs": skipped,
        "asr/ref_words": ref_words,
        "asr/ref_chars": ref_chars,
    }
    return ASRScores(metrics=metrics, rows=rows)
