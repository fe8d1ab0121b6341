"""Write a transformers Llama-family causal LM (with its byte-level BPE tokenizer) as a GGUF file llama.cpp reads,
through the `gguf` package: llama.cpp's tensor names, its rotary layout for q/k (rows permuted as its own
converter permutes them), and tensors stored as F32, F16, BF16, Q8_0 or Q4_1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

# sota quantization of the LLM -> the GGUF tensor type it maps to, re-quantized from the dequantized weights:
# int8 weight-only -> Q8_0 (blocks of 32, one scale; llama.cpp has no per-row int8 type), int4 weight-only ->
# Q4_1 (blocks of 32 with scale and minimum: the affine form of torchao's groups of 128, on smaller blocks)
TYPES = {"none": "F32", "fp16": "F16", "bf16": "BF16", "int8_weight": "Q8_0", "int4_weight": "Q4_1"}
BLOCKED = {"Q8_0", "Q4_1"}  # block-quantized types: rows must be a multiple of 32 long
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_1": 3, "Q8_0": 7, "BF16": 32}  # llama.cpp's general.file_type
ARCHS = {"llama": "LLAMA"}


class GGUFUnsupported(ValueError):
    """This model or quantization has no GGUF form here; the message says which and why."""


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    # HF stores rotary halves as [first half | second half] per head; llama.cpp expects them interleaved.
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer_fields(tokenizer: Any) -> dict[str, Any]:
    """tokens, token types and merges of a byte-level BPE tokenizer (what llama.cpp calls `gpt2`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    doc = json.loads(backend.to_str()) if backend is not None else {}
    model = doc.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFUnsupported(f"GGUF needs a BPE tokenizer; this LLM's is {model.get('type') or type(tokenizer).__name__} "
                              "(the corpus word/char tokenizers of tiny LLMs have no llama.cpp form)")
    vocab = model["vocab"]
    added = {t["id"]: t for t in doc.get("added_tokens", [])}
    size = max([*vocab.values(), *added]) + 1
    tokens = [""] * size
    for text, i in vocab.items():
        tokens[i] = text
    types = [1] * size  # normal
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = 3 if t.get("special") else 4  # control / user-defined
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def _array(t: torch.Tensor, kind: str) -> tuple[np.ndarray, Any]:
    import gguf

    if kind == "BF16":
        raw = t.to(torch.bfloat16).view(torch.int16).numpy()
        return raw.view(np.uint16), gguf.GGMLQuantizationType.BF16
    if kind == "F16" or (kind in BLOCKED and (t.ndim < 2 or t.shape[-1] % 32)):
        return t.to(torch.float16).numpy(), gguf.GGMLQuantizationType.F16
    if kind in BLOCKED:
        qtype = getattr(gguf.GGMLQuantizationType, kind)
        return gguf.quants.quantize(t.float().numpy(), qtype), qtype
    return t.float().numpy(), gguf.GGMLQuantizationType.F32


def check(llm: Any, tokenizer: Any) -> None:
    """Refuse, before any writing, an LLM this writer has no GGUF form for."""
    if llm.config.model_type not in ARCHS:
        raise GGUFUnsupported(f"GGUF export knows {', '.join(ARCHS)} models; this LLM is {llm.config.model_type}")
    _tokenizer_fields(tokenizer)


def write(llm: Any, tokenizer: Any, path: Path, mode: str) -> dict[str, Any]:
    """`llm` (float weights: dequantize first) into `path` with its 2-D weights in the type `mode` maps to;
    norms and 1-D tensors stay F32. Returns what was written."""
    import gguf

    config = llm.config
    check(llm, tokenizer)
    if mode not in TYPES:
        raise GGUFUnsupported(f"quant mode {mode} has no GGUF type here; GGUF takes {', '.join(TYPES)}")
    fields = _tokenizer_fields(tokenizer)
    arch = getattr(gguf.MODEL_ARCH, ARCHS[config.model_type])
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(getattr(config, "rope_theta", None)
                                    or (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    for key, setter in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                        ("pad_token_id", writer.add_pad_token_id)):
        value = getattr(tokenizer, key, None)
        if value is not None:
            setter(int(value))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
    state = {k: v.detach().cpu() for k, v in llm.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # llama.cpp ties a missing output table to token_embd
    kinds: dict[str, int] = {}
    unblocked: list[str] = []  # 2-D weights a block type cannot hold (rows not a multiple of 32): stored F16
    for key, tensor in state.items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFUnsupported(f"{key}: no llama.cpp tensor name for it")
        if key.endswith("self_attn.q_proj.weight"):
            tensor = _permute(tensor, heads)
        elif key.endswith("self_attn.k_proj.weight"):
            tensor = _permute(tensor, kv_heads)
        data, qtype = _array(tensor, TYPES[mode] if tensor.ndim == 2 else "F32")
        writer.add_tensor(name, data, raw_dtype=qtype)
        kinds[qtype.name] = kinds.get(qtype.name, 0) + 1
        if tensor.ndim == 2 and TYPES[mode] in BLOCKED and qtype.name == "F16":
            unblocked.append(key)
    writer.add_file_type(FILE_TYPES[TYPES[mode]])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    notes = [f"{len(unblocked)} weight(s) stored as F16, their rows not a multiple of {TYPES[mode]}'s 32-wide blocks "
             f"(e.g. {unblocked[0]})"] if unblocked else []
    return {"file": path.name, "tensors": kinds, "bytes": path.stat().st_size, "notes": notes}
