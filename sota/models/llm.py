"""LLM builders: each returns `(model, tokenizer)`. Sizes are builder arguments chosen by config files,
never `if size == ...` branches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from sota.models.hub import resolve_pretrained
from sota.models.tokenizer import corpus_tokenizer


def base_model(llm: PreTrainedModel) -> PreTrainedModel:
    """The transformers model under a peft wrapper (LoRA attached), else `llm` itself."""
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def tiny_llama(
    words: Iterable[str],
    hidden_size: int = 192,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 512,
    max_positions: int = 512,
    tokenizer: str = "word",
) -> tuple[PreTrainedModel, object]:
    """A randomly initialised Llama over a closed vocabulary (`word` or `char`) built from the corpus."""
    tokenizer = corpus_tokenizer(words, tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config), tokenizer


def pretrained_llm(path: str, words: Iterable[str] | None = None, dtype: str = "float32",
                   attn_implementation: str = "sdpa") -> tuple[PreTrainedModel, object]:
    """A pretrained causal LM from a bundled name, local directory or cached hub id; `words` is unused."""
    local = resolve_pretrained(path, key="llm.path")
    tokenizer = AutoTokenizer.from_pretrained(local, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(local, local_files_only=True, dtype=getattr(torch, dtype),
                                                 attn_implementation=attn_implementation)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def shape_only_llm(arch: str, words: Iterable[str], dtype: str = "bfloat16",
                   device: str | None = None) -> tuple[PreTrainedModel, object]:
    """Random weights in the shape of a published LLM (`arch`: a key of sota.models.meta.ARCHS), with the corpus
    word tokenizer: for speed and memory studies, which do not depend on weight values. Its answers are noise.
    `device` builds it there directly (a 3B model initialised on a CPU takes minutes)."""
    from sota.models.meta import ARCHS, arch_config

    if arch not in ARCHS:
        raise ValueError(f"llm.arch={arch!r} is not a known shape; known: {', '.join(sorted(ARCHS))}")
    config = arch_config(arch, key="llm.arch")
    tokenizer = corpus_tokenizer(words, "word")
    where = torch.device(device) if device else torch.device("cpu")
    with where:
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    return model.eval(), tokenizer
