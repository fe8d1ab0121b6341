"""The fused decode step (`generate.backend=fused`): one token of a Llama-family LLM in five launches a layer.

`FusedStep` reads the LLM's own weights in place (after `sota.models.fuse` has concatenated q/k/v and gate/up)
and the static cache that the prefill filled, and runs `sota.models.decode_kernels`' operations layer by
layer into buffers of its own, which a CUDA graph captures. `unsupported(llm)` names what the step cannot run
(another architecture, quantized or adapted linears, sliding-window attention, ...); the decoder then runs the
compiled step instead and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sota.models import decode_kernels as ops
from sota.models.fuse import FusedLinear

FAMILIES = ("llama", "qwen2")   # RMSNorm, rotary q/k, grouped-query attention, SiLU-gated MLP, no other terms
FLOATS = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor             # [(heads + 2 kv_heads) x head_dim, hidden]: q, k, v rows
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor         # [2 x intermediate, hidden]: gate rows, then up rows
    down: torch.Tensor


def _base(llm: nn.Module) -> nn.Module:
    return llm.get_base_model() if hasattr(llm, "get_base_model") else llm


def _plain(module: nn.Module | None, dtype: torch.dtype, bias: bool = False) -> str | None:
    """Why `module` is not a linear whose float weight (and bias, if allowed) the kernels can read."""
    if isinstance(module, FusedLinear):
        weight, has_bias = module.weight, module.bias is not None
    elif type(module) is nn.Linear:
        weight, has_bias = module.weight, module.bias is not None
    else:
        return f"{type(module).__name__} layers (quantized or adapted) are not read by the fused step"
    if type(weight) not in (torch.Tensor, nn.Parameter) or weight.dtype != dtype:
        return f"weights in {type(weight).__name__} / {weight.dtype} (the step reads plain {dtype} tensors)"
    if has_bias and not bias:
        return "a bias on o_proj or the MLP"
    return None


def unsupported(llm: nn.Module) -> str | None:
    """Why the fused step cannot decode `llm` (fused projections expected), or None."""
    base = _base(llm)
    config = getattr(base, "config", None)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        return f"model type {family!r} (the fused step knows {', '.join(FAMILIES)})"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "an MLP other than SiLU-gated"
    inner = getattr(base, "model", None)
    emb = getattr(inner, "embed_tokens", None)
    if type(emb) is not nn.Embedding or emb.weight.dtype not in FLOATS:
        return "a token table that is not a float embedding"
    dtype = emb.weight.dtype
    if getattr(getattr(inner, "rotary_emb", None), "rope_type", "default") in ("dynamic", "longrope"):
        return "a rope type that recomputes its frequencies per call"
    for i, layer in enumerate(inner.layers):
        attn, mlp = layer.self_attn, layer.mlp
        if getattr(attn, "sliding_window", None):
            return f"sliding-window attention (layer {i})"
        for module, bias in ((getattr(attn, "qkv_fused", None), True), (attn.o_proj, False),
                             (getattr(mlp, "gate_up_fused", None), False), (mlp.down_proj, False)):
            if module is None:
                return f"layer {i}'s q/k/v or gate/up projections are not fused"
            why = _plain(module, dtype, bias)
            if why:
                return why
    return _plain(base.lm_head, dtype)


class FusedStep:
    """One greedy decode step for `batch_size` rows over a static cache of `max_len` slots."""

    def __init__(self, llm: nn.Module, batch_size: int, max_len: int) -> None:
        base = _base(llm)
        inner, config = base.model, base.config
        first = inner.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(first, "head_dim", config.hidden_size // self.heads)
        self.scale = float(getattr(first, "scaling", self.head_dim ** -0.5))
        self.eps = float(inner.norm.variance_epsilon)
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = base.lm_head.weight
        self.layers = [Layer(attn_norm=layer.input_layernorm.weight, qkv=layer.self_attn.qkv_fused.weight,
                             qkv_bias=layer.self_attn.qkv_fused.bias, o=layer.self_attn.o_proj.weight,
                             mlp_norm=layer.post_attention_layernorm.weight, gate_up=layer.mlp.gate_up_fused.weight,
                             down=layer.mlp.down_proj.weight) for layer in inner.layers]
        dev, dtype = self.embed.device, self.embed.dtype
        # Rotary tables for every position a step can reach (positions count real tokens, so < max_len), by the
        # model's own rotary module: the values its forward would use.
        positions = torch.arange(max_len, device=dev)[None]
        with torch.no_grad():
            cos, sin = inner.rotary_emb(torch.zeros(1, dtype=dtype, device=dev), positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        hidden, b = self.embed.shape[1], batch_size
        inter = self.layers[0].gate_up.shape[0] // 2
        new = dict(dtype=dtype, device=dev)
        # Two residual buffers: each residual product reads one and writes the other (no kernel writes what it reads).
        self.h = torch.zeros(b, hidden, **new)
        self.h_mid = torch.zeros(b, hidden, **new)
        self.q = torch.zeros(b, self.heads * self.head_dim, **new)
        self.attn = torch.zeros_like(self.q)
        self.act = torch.zeros(b, inter, **new)
        self.logits = torch.zeros(b, self.head.shape[0], **new)

    def __call__(self, token: torch.Tensor, last_pos: torch.Tensor, step: torch.Tensor, start: torch.Tensor,
                 prompt_valid: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The next greedy token of each row (into `token`) after writing this step's keys and values."""
        torch.index_select(self.embed, 0, token, out=self.h)
        for layer, (keys, values) in zip(self.layers, caches):
            ops.qkv_rope(self.h, layer.attn_norm, self.eps, layer.qkv, layer.qkv_bias, self.cos, self.sin,
                         last_pos, step, start, self.q, keys, values, self.heads, self.kv_heads)
            ops.attend(self.q, keys, values, prompt_valid, step, start, self.attn, self.scale)
            ops.proj(self.attn, layer.o, self.h_mid, residual=self.h)
            ops.proj(self.h_mid, layer.gate_up, self.act, norm=layer.mlp_norm, eps=self.eps, gated=True)
            ops.proj(self.act, layer.down, self.h, residual=self.h_mid)
        ops.proj(self.h, self.head, self.logits, norm=self.norm, eps=self.eps)
        torch.argmax(self.logits, dim=-1, out=token)
        return token
