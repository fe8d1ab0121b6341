"""Memory a batch-1 measurement allocates beyond the weights, stage by stage, from the shapes alone: the
encoder over the protocol clip (in context-length chunks), the second encoder, the connector, the LLM's
prefill over prompt + audio tokens, and the KV cache of the decoded answer. Stages run one after another, so
the peak is the largest stage plus what outlives it (the cache).

Each stage counts the tensors that are alive together at its widest point in eager PyTorch (an input, its
output, and the intermediate a block keeps), not every temporary a kernel may use; the error table in
experiments/2026-12-04_planner says how close that comes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sota.models.connector import max_audio_tokens
from sota.models.encoder import WHISPER_FRAMES_PER_SECOND

SAMPLE_RATE = 16_000
MEL_PER_FRAME = 2           # Whisper's second convolution halves the 100 Hz mel frames to 50 Hz
# Text around the audio in a prompt (system, task and chat-template tokens): the measured official runs of the
# seed rows prefilled 36 tokens for 30 audio tokens and mini's 49 for 15 audio tokens (experiments/2026-12-03_
# export_h200/seed_*.json, 2026-11-29_mini_frontier); the larger of the two gaps is taken.
PROMPT_TEXT_TOKENS = 34


@dataclass
class Stage:
    name: str
    bytes: int
    detail: str


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _eager(config: Any) -> bool:
    # A score matrix [heads, queries, keys] exists only in eager attention; SDPA's kernels stream it.
    return getattr(config, "_attn_implementation", None) == "eager"


def whisper(enc: nn.Module, rows: int, context_s: float, dtype: torch.dtype) -> Stage:
    c, s = enc.config, _size(dtype)
    positions = int(round(context_s * WHISPER_FRAMES_PER_SECOND))
    mel = positions * MEL_PER_FRAME
    d, ffn, heads = c.d_model, c.encoder_ffn_dim, c.encoder_attention_heads
    conv = rows * (c.num_mel_bins * mel * 4 + 2 * d * mel * s)           # float32 mel in, conv1 out, its GELU
    attn = rows * positions * d * s * 6 + (2 * rows * heads * positions ** 2 * s if _eager(c) else 0)
    mlp = rows * positions * s * (2 * d + 2 * ffn)                        # residual, norm, fc1 out, its GELU
    peak = max(conv, attn, mlp)
    return Stage("encoder", peak, f"{rows} x {positions} positions, widest of conv {conv >> 20} / attention "
                                  f"{attn >> 20} / MLP {mlp >> 20} MiB")


def second(model: nn.Module, rows: int, context_s: float) -> Stage:
    c = model.config
    samples = int(round(context_s * SAMPLE_RATE))
    # The first convolution of a wav2vec2/HuBERT feature extractor is the widest tensor: its output and its
    # normalised copy live together, in the model's float32.
    frames = samples // c.conv_stride[0]
    peak = rows * (samples * 4 + 2 * c.conv_dim[0] * frames * _size(_dtype(model)))
    return Stage("second encoder", peak, f"{rows} x {frames} frames x {c.conv_dim[0]} channels (first convolution)")


def connector(frames: int, in_dim: int, hidden: int, dtype: torch.dtype) -> Stage:
    s = _size(dtype)
    # The encoder's frames in, their windows, and the connector's hidden states over them.
    peak = frames * (2 * in_dim + 4 * hidden) * s
    return Stage("connector", peak, f"{frames} frames x {in_dim} in / {hidden} hidden")


def projector(frames: int, windows: int, in_dim: int, hidden: int, dtype: torch.dtype) -> Stage:
    s = _size(dtype)
    # The encoder's frames, normalised, and their windows gathered (each [frames, in]); then one row per window
    # through the MLP: its first product and that product's activation.
    peak = frames * in_dim * 3 * s + 2 * windows * hidden * s
    return Stage("connector", peak, f"{frames} frames x {in_dim} in, {windows} windows x {hidden} hidden")


def llm_config(llm: nn.Module) -> Any:
    return llm.config.get_text_config() if hasattr(llm.config, "get_text_config") else llm.config


def prefill(llm: nn.Module, tokens: int, dtype: torch.dtype | None = None) -> Stage:
    c, s = llm_config(llm), _size(dtype or _dtype(llm))
    inter = max((m.out_features for n, m in llm.named_modules() if n.endswith("gate_proj") and hasattr(m, "out_features")),
                default=c.intermediate_size)
    head = llm.get_output_embeddings()
    head_size = _size(_dtype(head)) if head is not None else s
    hidden = tokens * c.hidden_size * s * 3                      # residual, norm, attention or MLP output
    mlp = tokens * inter * s * 3                                 # gate, up, their product
    # A prefill asks for the last position's logits only (logits_to_keep=1, sota.models.decoding), as
    # transformers' generate does: one row of the vocabulary, and its float32 copy.
    logits = c.vocab_size * max(head_size, 4)
    peak = max(hidden + mlp, hidden + logits)
    return Stage("prefill", peak, f"{tokens} tokens, MLP {inter} wide, last-position logits over {c.vocab_size}")


def kv_cache(llm: nn.Module, positions: int, dtype: torch.dtype | None = None) -> Stage:
    s = _size(dtype or _dtype(llm))
    per_layer = 0
    layers = 0
    for name, m in llm.named_modules():
        if name.endswith("self_attn") and hasattr(m, "k_proj"):
            per_layer += 2 * m.k_proj.out_features * positions * s
            layers += 1
    return Stage("kv cache", per_layer, f"{layers} layers x {positions} positions")


def stages(parts: dict[str, nn.Module | None], cfg: Any, clip_s: float, new_tokens: int,
           dtypes: dict[str, torch.dtype] | None = None) -> tuple[list[Stage], int]:
    """The stages of one batch-1 measurement and the audio tokens the clip becomes. `dtypes`: a part's compute
    dtype where quantization changes it (the meta-built parts keep the dtype they were built in)."""
    enc, c = parts["encoder"], cfg.connector
    dtypes = dtypes or {}

    def dtype(part: str) -> torch.dtype:
        return dtypes.get(part) or _dtype(parts[part])

    context = float(cfg.encoder.context_s)
    chunks = max(1, math.ceil(clip_s / context - 1e-9))
    heard = min(clip_s, chunks * context)
    out = [whisper(enc, chunks, context, dtype("encoder"))]
    in_dim = enc.config.d_model
    if parts.get("second") is not None:
        out.append(second(parts["second"], chunks, context))
        in_dim += parts["second"].config.hidden_size
    hidden = int(c.get("hidden_size") or in_dim)
    all_frames = chunks * int(round(context * WHISPER_FRAMES_PER_SECOND))
    if hasattr(parts["connector"], "mlp"):   # the window projector: an MLP over each window, not over each frame
        windows = max_audio_tokens(chunks * context, WHISPER_FRAMES_PER_SECOND, c.window_s, c.stride_s, 1)
        out.append(projector(all_frames, int(windows), in_dim, hidden, dtype("connector")))
    else:
        out.append(connector(all_frames, in_dim, hidden, dtype("connector")))
    # tokens per window are the connector's (a projector's is one, and its config has no num_queries)
    audio = int(max_audio_tokens(heard, WHISPER_FRAMES_PER_SECOND, c.window_s, c.stride_s,
                                 parts["connector"].num_queries))
    tokens = audio + PROMPT_TEXT_TOKENS
    out.append(prefill(parts["llm"], tokens, dtype("llm")))
    out.append(kv_cache(parts["llm"], tokens + new_tokens, dtype("llm")))
    return out, audio
