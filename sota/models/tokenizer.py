"""A word-level tokenizer for the tiny preset's randomly initialised LLMs: a closed vocabulary built from the
corpus keeps the output layer small, which dominates the cost of tiny models on a CPU."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Whitespace word tokenizer over `words` with a minimal chat template."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in sorted(set(words) - set(SPECIALS)):
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|end|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
