"""The tokenizer and feature-extractor side of a converted Whisper: the vocabulary completed with Whisper's
special tokens, and the processor files transformers loads offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sota.formats.ct2 import CT2FormatError

# WhisperFeatureExtractor defaults: 16 kHz audio, hop 160 samples, two mel frames per encoder position.
_SAMPLING_RATE = 16000
_HOP_LENGTH = 160



def read_vocabulary(src_dir: Path) -> list[str] | None:
    """CT2's id -> token list (vocabulary.txt, or vocabulary.json in newer ctranslate2), if present."""
    txt, js = src_dir / "vocabulary.txt", src_dir / "vocabulary.json"
    if js.is_file():
        return list(json.loads(js.read_text(encoding="utf-8")))
    if txt.is_file():
        # Split on "\n" only: str.splitlines() would also split on U+2028 etc., which are legal BPE tokens.
        return txt.read_text(encoding="utf-8").rstrip("\n").split("\n")
    return None


def complete_tokenizer_json(tokenizer_json: dict[str, Any], vocab: list[str] | None, vocab_size: int,
                             path: Path) -> dict[str, Any]:
    """Check tokenizer.json against the CT2 vocabulary and append the tokens it lacks (Whisper timestamps).

    CT2 tokenizer.json files often stop at <|notimestamps|>, while the model has ``vocab_size`` ids including the
    1501 timestamp tokens; without them transformers cannot decode timestamp ids.
    """
    id_to_token: dict[int, str] = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    for added in tokenizer_json.get("added_tokens", []):
        id_to_token[added["id"]] = added["content"]
    if vocab is not None:
        if len(vocab) != vocab_size:
            raise CT2FormatError(f"{path.parent}: vocabulary has {len(vocab)} tokens but the model has {vocab_size}")
        mismatched = [i for i, tok in id_to_token.items() if i >= len(vocab) or vocab[i] != tok]
        if mismatched:
            i = mismatched[0]
            raise CT2FormatError(f"{path}: token id {i} is {id_to_token[i]!r} but the CT2 vocabulary says "
                                 f"{vocab[i] if i < len(vocab) else None!r} ({len(mismatched)} mismatches)")
    missing = [i for i in range(vocab_size) if i not in id_to_token]
    if missing:
        if vocab is None:
            raise CT2FormatError(f"{path}: tokenizer lacks {len(missing)} of the model's {vocab_size} token ids and "
                                 "there is no vocabulary.txt/json to complete it from")
        if missing != list(range(missing[0], vocab_size)):
            raise CT2FormatError(f"{path}: tokenizer lacks token ids in the middle of the vocabulary "
                                 f"(first missing: {missing[0]})")
        tokenizer_json = dict(tokenizer_json)
        tokenizer_json["added_tokens"] = list(tokenizer_json.get("added_tokens", [])) + [
            # special=False like the Hugging Face Whisper tokenizers: timestamps are regular text-side tokens that
            # WhisperTokenizer filters itself (ids >= <|notimestamps|> + 1).
            {"id": i, "content": vocab[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False}
            for i in missing
        ]
    return tokenizer_json


def special_id(token_to_id: dict[str, int], token: str, path: Path) -> int:
    if token not in token_to_id:
        raise CT2FormatError(f"{path}: Whisper special token {token} is missing from the tokenizer")
    return token_to_id[token]


def build_processor(tokenizer_json: dict[str, Any], n_mels: int, max_source_positions: int, work: Path) -> Any:
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    tok_file = work / "ct2_tokenizer.json"
    tok_file.write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    # Extra special tokens in id order: WhisperTokenizer derives the first timestamp id as all_special_ids[-1] + 1.
    specials = [a["content"] for a in sorted(tokenizer_json["added_tokens"], key=lambda a: a["id"])
                if a.get("special") and a["content"] != "<|endoftext|>"]
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tok_file), pad_token="<|endoftext|>",
                                     additional_special_tokens=specials)
    tok_file.unlink()
    # One encoder position = 2 mel frames = 2 hops; 1500 positions -> the usual 30 s window.
    chunk_length = round(max_source_positions * 2 * _HOP_LENGTH / _SAMPLING_RATE)
    feature_extractor = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=_SAMPLING_RATE,
                                                hop_length=_HOP_LENGTH, chunk_length=chunk_length)
    return WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


