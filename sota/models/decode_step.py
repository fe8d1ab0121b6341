"""The fused decode step (`generate.backend=fused`): one token of a Llama-family LLM in five launches a layer.

`FusedStep` reads the LLM's own weights in place (float tensors or compact int4 layers, after `sota.models.fuse`
has concatenated q/k/v and gate/up) and the static cache that the prefill filled, and runs
`sota.models.decode_kernels`' operations layer by layer into buffers of its own, which a CUDA graph captures.
`unsupported(llm)` names what the step cannot run (another architecture, other quantized layouts, adapters,
sliding-window attention, ...); the decoder then runs the compiled step instead and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sota.models import decode_kernels as ops
from sota.models import rotary
from sota.models.fuse import FusedLinear
from sota.models.llm import base_model

FAMILIES = ("llama", "qwen2")   # RMSNorm, rotary q/k, grouped-query attention, SiLU-gated MLP, no other terms
FLOATS = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Layer:
    attn_norm: torch.Tensor
    qkv: ops.Weight               # [(heads + 2 kv_heads) x head_dim, hidden]: q, k, v rows
    qkv_bias: torch.Tensor | None  # a float weight's (an int4 layer keeps its own)
    o: ops.Weight
    mlp_norm: torch.Tensor
    gate_up: ops.Weight           # [2 x intermediate, hidden]: gate rows, then up rows
    down: ops.Weight
    heads: int                    # per layer: width pruning may keep different numbers in each
    kv_heads: int
    intermediate: int


def _int4(module: nn.Module) -> bool:
    """A compact int4 layer (codes, scales and zeros, group size: `sota.compress.int4.Int4Linear`)."""
    return all(hasattr(module, a) for a in ("qdata", "scale_and_zero", "group_size", "packing"))


def operand(module: nn.Module) -> tuple[ops.Weight, torch.Tensor | None]:
    """What the kernels read of a linear (fused or not): its float weight and bias, or its int4 layer."""
    layer = getattr(module, "layer", None)           # a fused group of int4 layers
    if layer is not None and _int4(layer):
        return layer, None
    if _int4(module):
        return module, None
    return module.weight, module.bias


def _readable(module: nn.Module | None, dtype: torch.dtype, device: str, bias: bool = False) -> str | None:
    """Why the kernels cannot read `module` as a linear, or None."""
    if module is None:
        return "projections that are not fused"
    if not (isinstance(module, FusedLinear) or type(module) is nn.Linear or _int4(module)):
        return f"{type(module).__name__} layers (quantized other than compact int4, or adapted)"
    weight, own_bias = operand(module)
    if isinstance(weight, torch.Tensor):
        if type(weight) not in (torch.Tensor, nn.Parameter) or weight.dtype != dtype:
            return (f"weights in {type(weight).__name__} / {weight.dtype} (the step reads plain {dtype} tensors, "
                    "and int4 as quant.int4_layout=compact stores it, with quant.int4_kernel=triton on CUDA)")
    else:
        group = weight.group_size
        if device == "cuda" and weight.packing != "triton":
            return ("compact int4 packed for tinygemm (the step reads the codes as quant.int4_kernel=triton "
                    "stores them)")
        if group < 8 or group & (group - 1):
            return f"int4 groups of {group} (the step takes powers of two from 8)"
        own_bias = weight.bias
    if own_bias is not None and not bias:
        return "a bias on o_proj or the MLP"
    return None


def unsupported(llm: nn.Module) -> str | None:
    """Why the fused step cannot decode `llm` (fused projections expected) where it lives, or None."""
    base = base_model(llm)
    config = getattr(base, "config", None)
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        return f"model type {family!r} (the fused step knows {', '.join(FAMILIES)})"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "an MLP other than SiLU-gated"
    inner = getattr(base, "model", None)
    norm = getattr(getattr(inner, "norm", None), "weight", None)
    if not isinstance(norm, torch.Tensor) or norm.dtype not in FLOATS or not hasattr(base, "lm_head"):
        return "not a causal LM with a final RMSNorm and a head"
    dtype, device = norm.dtype, norm.device.type
    table = getattr(getattr(inner, "embed_tokens", None), "weight", None)
    if isinstance(table, torch.Tensor) and table.dtype != dtype:
        return f"a {table.dtype} token table under {dtype} layers"
    if getattr(getattr(inner, "rotary_emb", None), "rope_type", "default") in rotary.UPDATES_PER_CALL:
        return "a rope type that recomputes its frequencies per call"
    for i, layer in enumerate(inner.layers):
        attn, mlp = layer.self_attn, layer.mlp
        if getattr(attn, "sliding_window", None):
            return f"sliding-window attention (layer {i})"
        for module, bias in ((getattr(attn, "qkv_fused", None), True), (attn.o_proj, False),
                             (getattr(mlp, "gate_up_fused", None), False), (mlp.down_proj, False)):
            why = _readable(module, dtype, device, bias)
            if why:
                return f"{why}, layer {i}"
    return _readable(base.lm_head, dtype, device)


class FusedStep:
    """One greedy decode step for `batch_size` rows over a static cache of `max_len` slots."""

    def __init__(self, llm: nn.Module, batch_size: int, max_len: int) -> None:
        base = base_model(llm)
        inner, config = base.model, base.config
        first = inner.layers[0].self_attn
        self.head_dim = getattr(first, "head_dim", config.hidden_size // config.num_attention_heads)
        self.scale = float(getattr(first, "scaling", self.head_dim ** -0.5))
        self.eps = float(inner.norm.variance_epsilon)
        self.embed = inner.embed_tokens
        self.norm = inner.norm.weight
        self.head = operand(base.lm_head)[0]
        self.layers = []
        for layer in inner.layers:
            qkv, qkv_bias = operand(layer.self_attn.qkv_fused)
            q_rows, kv_rows, _ = layer.self_attn.qkv_fused.parts
            self.layers.append(Layer(
                attn_norm=layer.input_layernorm.weight, qkv=qkv, qkv_bias=qkv_bias,
                o=operand(layer.self_attn.o_proj)[0], mlp_norm=layer.post_attention_layernorm.weight,
                gate_up=operand(layer.mlp.gate_up_fused)[0], down=operand(layer.mlp.down_proj)[0],
                heads=q_rows // self.head_dim, kv_heads=kv_rows // self.head_dim,
                intermediate=layer.mlp.gate_up_fused.parts[0]))
        dev, dtype = self.norm.device, self.norm.dtype
        # Rotary tables for every position a step can reach (positions count real tokens, so < max_len), by the
        # model's own rotary module: the values its forward would use.
        positions = torch.arange(max_len, device=dev)[None]
        with torch.no_grad():
            cos, sin = inner.rotary_emb(torch.zeros(1, dtype=dtype, device=dev), positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
        hidden, b = config.hidden_size, batch_size
        new = dict(dtype=dtype, device=dev)
        # Two residual buffers: each residual product reads one and writes the other (no kernel writes what it reads).
        self.h = torch.zeros(b, hidden, **new)
        self.h_mid = torch.zeros(b, hidden, **new)
        # Sized for the widest layer; each layer works in a view of its own width.
        self.q = torch.zeros(b, max(lay.heads for lay in self.layers) * self.head_dim, **new)
        self.attn = torch.zeros_like(self.q)
        self.act = torch.zeros(b, max(lay.intermediate for lay in self.layers), **new)
        vocab = self.head.shape[0] if isinstance(self.head, torch.Tensor) else self.head.out_features
        self.logits = torch.zeros(b, vocab, **new)
        triton = ops.on_triton(self.logits)
        self.attend_scratch = (ops.attend_scratch(b, self.q.shape[1] // self.head_dim, max_len, self.head_dim, dev)
                               if triton else None)
        self.argmax_scratch = ops.argmax_scratch(self.logits) if triton else None
        # every product may split its inputs over programs: room for the widest one's sums
        rows = max(hidden, 2 * self.act.shape[1], *((lay.heads + 2 * lay.kv_heads) * self.head_dim
                                                    for lay in self.layers))
        self.proj_scratch = ops.proj_scratch(b, rows, dev) if triton else None

    def __call__(self, token: torch.Tensor, last_pos: torch.Tensor, step: torch.Tensor, start: torch.Tensor,
                 prompt_valid: torch.Tensor, caches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The next greedy token of each row (into `token`) after writing this step's keys and values."""
        ops.embed(token, self.embed, self.h)
        for layer, (keys, values) in zip(self.layers, caches):
            width = layer.heads * self.head_dim
            q, attn, act = self.q[:, :width], self.attn[:, :width], self.act[:, :layer.intermediate]
            ops.qkv_rope(self.h, layer.attn_norm, self.eps, layer.qkv, layer.qkv_bias, self.cos, self.sin,
                         last_pos, step, start, q, keys, values, layer.heads, layer.kv_heads, self.proj_scratch)
            ops.attend(q, keys, values, prompt_valid, step, start, attn, self.scale, self.attend_scratch)
            ops.proj(attn, layer.o, self.h_mid, residual=self.h, scratch=self.proj_scratch)
            ops.proj(self.h_mid, layer.gate_up, act, norm=layer.mlp_norm, eps=self.eps, gated=True,
                     scratch=self.proj_scratch)
            ops.proj(act, layer.down, self.h, residual=self.h_mid, scratch=self.proj_scratch)
        ops.proj(self.h, self.head, self.logits, norm=self.norm, eps=self.eps)
        ops.argmax(self.logits, token, self.argmax_scratch)
        return token
