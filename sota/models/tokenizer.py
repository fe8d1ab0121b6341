"""Closed-vocabulary tokenizers for the tiny preset's randomly initialised LLMs, built from the corpus: a small
output layer keeps tiny models fast on a CPU. `char` spells words letter by letter, which shares acoustic
evidence across words (each letter is seen thousands of times); `word` gives one token per word."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

Kind = Literal["word", "char"]
KINDS = ("word", "char")
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>")
SPACE = "▁"  # spaces are tokens too when spelling, written as the SentencePiece marker
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _vocab(symbols: Iterable[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for sym in sorted(set(symbols) - set(SPECIALS)):
        vocab[sym] = len(vocab)
    return vocab


def corpus_tokenizer(words: Iterable[str], kind: Kind = "word") -> PreTrainedTokenizerFast:
    """A tokenizer over the corpus `words` with a minimal chat template."""
    words = list(words)
    if kind == "word":
        core = Tokenizer(models.WordLevel(_vocab(words), unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    elif kind == "char":
        core = Tokenizer(models.WordLevel(_vocab({c for w in words for c in w} | {SPACE}), unk_token="<unk>"))
        core.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(r"\s+"), SPACE)])
        core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        core.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    else:
        raise ValueError(f"llm.tokenizer must be one of {', '.join(KINDS)}, got {kind!r}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
