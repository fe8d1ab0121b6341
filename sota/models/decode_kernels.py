"""The fused decode step's three operations (`generate.backend=fused`): Triton kernels on CUDA, torch on a CPU.

A Llama-family decoder layer's one-token step is five launches of three operations:
- `qkv_rope`: RMSNorm of the residual stream, the fused q/k/v product (plus its bias, if any), rotary on q and
  k, and k and v written into the static cache at the step's slot;
- `attend`: each query head against its key/value head's cache, over the positions the step may see (online
  softmax: the scores never leave the kernel);
- `proj`, three times: o_proj plus the residual; RMSNorm then gate/up with the SiLU gate applied; down_proj plus
  the residual. The lm_head is one more `proj`, with the final RMSNorm.

Batch-1 decoding of a small LLM is bound by kernel count: compiled, SmolLM2-135M's step ran 395 kernels in
0.88 ms of GPU time at 18x its bandwidth floor, about 13 a layer (experiments/2026-12-03_export_h200). Here a
layer is five kernels and a step 5 x layers + 4.

Each matrix-vector product streams its weight rows once, in blocks of `BLOCK_N` rows by `BLOCK_K` inputs, and
reduces in float32. Every value a transformers module hands on is rounded to the model's dtype where that
module rounds it (the norm's output, each projection's, rotary's products, SiLU, the residual sums), so the
step follows transformers' own arithmetic up to summation order. The torch functions do the same on a CPU;
the tests hold the kernels (through Triton's interpreter) to them.

Device scalars (`start`, `step`) and the per-row positions are read inside the kernels, so a CUDA graph of the
step replays correctly as they advance.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sota.utils.triton_support import available, interpreted


def _triton(x: torch.Tensor) -> bool:
    return x.is_cuda or (interpreted() and available())


@functools.cache
def _kernels():  # noqa: ANN202 - the jitted kernels, imported once Triton is needed
    from sota.models import decode_triton

    return decode_triton.proj, decode_triton.qkv_rope, decode_triton.attend


# -- the operations: Triton on CUDA, torch elsewhere ------------------------------------------------------------

def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm (Qwen2's is the same)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def proj(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, *, residual: torch.Tensor | None = None,
         norm: torch.Tensor | None = None, eps: float = 0.0, gated: bool = False) -> None:
    """out = W . x, in place, for x [B, K]: `norm` applies RMSNorm (that weight, `eps`) to x first; `gated` reads
    W as [gate; up] and gives SiLU(gate) * up; `residual` is added last."""
    if _triton(x):
        kernel = _kernels()[0]
        n = out.shape[1]
        dummy = x
        kernel[lambda meta: (-(-n // meta["BLOCK_N"]), x.shape[0])](
            x, weight, out, dummy if residual is None else residual, dummy if norm is None else norm,
            n, x.shape[1], x.stride(0), weight.stride(0), out.stride(0),
            0 if residual is None else residual.stride(0), eps,
            NORM=norm is not None, GATED=gated, RESIDUAL=residual is not None)
        return
    h = _rms(x, norm, eps) if norm is not None else x
    y = F.linear(h, weight)
    if gated:
        gate, up = y.chunk(2, dim=-1)
        y = F.silu(gate) * up
    if residual is not None:
        y = residual + y
    out.copy_(y)


def qkv_rope(x: torch.Tensor, norm: torch.Tensor, eps: float, weight: torch.Tensor, bias: torch.Tensor | None,
             cos: torch.Tensor, sin: torch.Tensor, last_pos: torch.Tensor, step: torch.Tensor, start: torch.Tensor,
             q_out: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int) -> None:
    """RMSNorm(x), the fused q/k/v product, rotary at each row's position `last_pos + 1 + step`; q into `q_out`
    [B, heads x D], k and v into the caches [B, kv_heads, max_len, D] at slot `start + step`."""
    d = k_cache.shape[-1]
    if _triton(x):
        kernel = _kernels()[1]
        total = heads + 2 * kv_heads
        kernel[lambda meta: (total * -(-(d // 2) // meta["BLOCK_R"]), x.shape[0])](
            x, norm, weight, x if bias is None else bias, cos, sin, last_pos, step, start, q_out, k_cache, v_cache,
            x.shape[1], x.stride(0), weight.stride(0), q_out.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), eps,
            HEADS=heads, KV_HEADS=kv_heads, D=d, HAS_BIAS=bias is not None)
        return
    b = x.shape[0]
    y = F.linear(_rms(x, norm, eps), weight, bias)
    q, k, v = y.split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
    pos = last_pos.view(b) + 1 + step
    c, s = cos[pos][:, None], sin[pos][:, None]                        # [B, 1, D]

    def rotate(t: torch.Tensor) -> torch.Tensor:
        t1, t2 = t.chunk(2, dim=-1)
        return t * c + torch.cat((-t2, t1), dim=-1) * s

    q_out.copy_(rotate(q.view(b, heads, d)).view(b, -1))
    slot = (start + step).view(1)
    k_cache.index_copy_(2, slot, rotate(k.view(b, kv_heads, d))[:, :, None])
    v_cache.index_copy_(2, slot, v.view(b, kv_heads, 1, d))


def attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, prompt_valid: torch.Tensor,
           step: torch.Tensor, start: torch.Tensor, out: torch.Tensor, scale: float) -> None:
    """Attention of q [B, heads x D] over the caches: a slot is visible where `prompt_valid` marks a prompt token
    or it lies in [start, start + step]; out [B, heads x D]."""
    b, kv_heads, max_len, d = k_cache.shape
    heads = q.shape[1] // d
    if _triton(q):
        kernel = _kernels()[2]
        kernel[(heads, b)](
            q, k_cache, v_cache, prompt_valid, step, start, out, max_len, scale,
            q.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), prompt_valid.stride(0),
            HEADS=heads, KV_HEADS=kv_heads, D=d, BLOCK_D=_pow2(d))
        return
    cols = torch.arange(max_len, device=q.device)
    visible = prompt_valid | ((cols >= start) & (cols <= start + step))[None]
    mask = visible[:, None, None, :]
    o = F.scaled_dot_product_attention(q.view(b, heads, 1, d), k_cache, v_cache, attn_mask=mask, scale=scale,
                                       enable_gqa=heads != kv_heads)
    out.copy_(o.reshape(b, heads * d))


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()
