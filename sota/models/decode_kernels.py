"""The fused decode step's operations (`generate.backend=fused`): Triton kernels on CUDA, torch on a CPU.

A Llama-family decoder layer's one-token step is five launches of three operations:
- `embed`: the token's row of the table (an int4 table's dequantized in one launch);
- `qkv_rope`: RMSNorm of the residual stream, the fused q/k/v product (plus its bias, if any), rotary on q and
  k, and k and v written into the static cache at the step's slot;
- `attend`: each query head against its key/value head's cache, over the positions the step may see (online
  softmax: the scores never leave the kernel), the cache split over programs whose shares the last one merges.
  Only q and this step's slot come from `qkv_rope`: a program's first tile of earlier slots loads before it
  waits on that kernel (PDL, below);
- `proj`, three times: o_proj plus the residual; RMSNorm then gate/up with the SiLU gate applied; down_proj plus
  the residual. The lm_head is one more `proj`, with the final RMSNorm, and `argmax` picks the token in one
  launch.

Batch-1 decoding of a small LLM is bound by kernel count: compiled, SmolLM2-135M's step ran 395 kernels in
0.88 ms of GPU time at 18x its bandwidth floor, about 13 a layer (experiments/2026-12-03_export_h200). Here a
layer is five kernels and a step 5 x layers + 3 (the token's row of the table, the head, the argmax).

Each matrix-vector product streams its weight rows once, in blocks of `BLOCK_N` rows by `BLOCK_K` inputs, and
reduces in float32. A product's first step of loads goes out before its RMS pass, so that pass's round trips to
memory overlap the weights' (a row that fits one step takes its RMS from that step's inputs). Any product may
split its inputs over programs, for more bytes in flight and fewer dependent steps a program: each part writes its
sums (gate/up: both; q/k/v: both rows of its rotary pairs) and the block's last part to finish adds them up in a
fixed order before the epilogue (experiments/2026-12-06_split_products_h100, 2026-12-07_gated_split). An int4
product may load each step's codes one step ahead, in registers (`AHEAD`, a column of its autotuning table).

On a device of compute capability 9.0 on, every kernel launches as a programmatic dependent of the one before it
(`sota.utils.triton_support.dependent_launch`; off with SOTA_TRITON_PDL=0): its programs may start while that
kernel finishes, issue their first weight loads, then wait for it (`decode_triton.prior_done`) before they read
anything it wrote, and let the next kernel in. 3B int4 on an H100: 1.24 against 1.36 ms a step
(experiments/2026-12-06_dependent_launch).

A weight is a float tensor or a compact int4 layer (`sota.compress.int4.Int4Linear`: codes two a byte, tinygemm's
scales and zeros); on CUDA the kernels read the codes as `quant.int4_kernel=triton` stores them, as int32 words of
8 codes, each input loaded once a step for all of a thread's rows. In bf16 and fp16 models
a word's codes are dequantized and multiplied two at a time in f16x2 and its sum is kept in float32 (a device;
experiments/2026-12-06_packed_int4_h100); in float32 models, and in Triton's interpreter, a code becomes the float
2**e + q by its bits and costs a float32 multiply-add.

Every value a transformers module hands on is rounded to the model's dtype where that module rounds it (the
norm's output, each projection's, rotary's products, SiLU, the residual sums), so the step follows
transformers' own arithmetic up to summation order. The torch functions do the same on a CPU; the tests hold
the kernels (through Triton's interpreter) to them.

Device scalars (`start`, `step`) and the per-row positions are read inside the kernels, so a CUDA graph of the
step replays correctly as they advance. Where a kernel's programs share one result (attention's split cache, the
argmax), the last program to finish, known by an atomic count, finishes it and resets the count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sota.utils.triton_support import available, dependent_launch, interpreted


def on_triton(x: torch.Tensor) -> bool:
    """Whether the operations run Triton's kernels on `x`: on CUDA, or in Triton's interpreter."""
    return x.is_cuda or (interpreted() and available())


def _kernels():  # noqa: ANN202 - the jitted kernels' module, imported once Triton is needed
    from sota.models import decode_triton

    return decode_triton


def _launch(x: torch.Tensor) -> dict[str, bool]:
    # every kernel as a programmatic dependent where the device has it (`dependent_launch`): PDL has the kernel
    # wait for the one before, launch_pdl has CUDA start it early
    on = dependent_launch(x.device)
    return dict(PDL=on, launch_pdl=on)


# -- the operations: Triton on CUDA, torch elsewhere ------------------------------------------------------------

def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm (Qwen2's is the same)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


Weight = torch.Tensor | nn.Module   # a float weight [N, K], or a compact int4 layer over N x K


def int4_codes(weight: Weight) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """A compact int4 layer's codes (uint8 [N, K / 2]), scales and zeros ([K / group, N, 2]) and group size; None
    for a float weight."""
    if isinstance(weight, torch.Tensor):
        return None
    return weight.qdata, weight.scale_and_zero, weight.group_size


def _words(codes: tuple[torch.Tensor, torch.Tensor, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    # as the kernels read them: codes in int32 words of 8, each (scale, zero) bf16 pair as one int32
    q, sz, group = codes
    return q.view(torch.int32), sz.view(torch.int32), group


def _product(h: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    # torch's path: an int4 layer multiplies (and adds its bias) itself
    return F.linear(h, weight, bias) if isinstance(weight, torch.Tensor) else weight(h)


def proj_scratch(batch: int, rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Working memory for Triton products of up to `rows` rows (a gated product's gate and up rows both count, and
    q/k/v's all) that split their inputs over programs: each part's sums (float32 [B, parts, rows]) and a count a
    block of rows of its finished parts (int32 zeros, which the kernel leaves at zero). A step allocates it once;
    its graph replays over the same buffers."""
    return (torch.empty(batch, _kernels().SPLIT_MAX, rows, dtype=torch.float32, device=device),
            torch.zeros(batch * rows, dtype=torch.int32, device=device))


def proj(x: torch.Tensor, weight: Weight, out: torch.Tensor, *, residual: torch.Tensor | None = None,
         norm: torch.Tensor | None = None, eps: float = 0.0, gated: bool = False,
         scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """out = W . x, in place, for x [B, K]: `norm` applies RMSNorm (that weight, `eps`) to x first; `gated` reads
    W as [gate; up] and gives SiLU(gate) * up; `residual` is added last. On Triton, a product whose rows fit
    `scratch` (`proj_scratch`) may split its inputs over programs, as its autotuning finds faster."""
    if on_triton(x):
        _proj_triton(x, weight, int4_codes(weight), out, residual, norm, eps, gated, scratch)
        return
    h = _rms(x, norm, eps) if norm is not None else x
    y = _product(h, weight)
    if gated:
        gate, up = y.chunk(2, dim=-1)
        y = F.silu(gate) * up
    if residual is not None:
        y = residual + y
    out.copy_(y)


def _proj_triton(x: torch.Tensor, weight: Weight | None, codes: tuple[torch.Tensor, torch.Tensor, int] | None,
                 out: torch.Tensor, residual: torch.Tensor | None, norm: torch.Tensor | None, eps: float,
                 gated: bool, scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    n, k = out.shape[1], x.shape[1]
    flags = dict(NORM=norm is not None, GATED=gated, RESIDUAL=residual is not None, **_launch(x))
    res = x if residual is None else residual
    nw = x if norm is None else norm
    sums = 2 * n if gated else n                   # a part's sums: a gated product's gate and up rows
    fits = scratch is not None and scratch[0].shape[0] >= x.shape[0] and scratch[0].shape[2] >= sums
    part, counts = scratch if fits else (out, out)
    splits = part.shape[1] if fits else 1
    grid = lambda meta: (-(-n // meta["BLOCK_N"]) * meta["SPLIT"], x.shape[0])  # noqa: E731
    if codes is None:
        _kernels().proj[grid](x, weight, out, res, nw, part, counts, n, k, x.stride(0), weight.stride(0),
                              out.stride(0), res.stride(0), eps, splits, pow2(x.shape[0]), **flags)
        return
    q, sz, group = _words(codes)
    if x.dtype == torch.bfloat16 and (x.stride(0) % 2 or x.data_ptr() % 4):
        x = x.clone()                          # the kernel reads bf16 inputs in 32-bit pairs: rows 4-byte aligned
    _kernels().proj_int4[grid](x, q, sz, out, res, nw, part, counts, n, k, x.stride(0), q.stride(0), out.stride(0),
                               res.stride(0), sz.shape[1], 1, eps, splits, pow2(x.shape[0]), GROUP=group, **flags)


def int4_rows(x: torch.Tensor, codes: torch.Tensor, scale_and_zero: torch.Tensor, group: int,
              out: torch.Tensor) -> None:
    """out = x . W^T, in place, for a few rows x [M, K] (Triton) over compact int4 codes (uint8 [N, K / 2]) and
    tinygemm's scales and zeros: the step's int4 product on its own, for `sota.compress.int4_triton`."""
    _proj_triton(x, None, (codes, scale_and_zero, group), out, None, None, 0.0, False)


def qkv_rope(x: torch.Tensor, norm: torch.Tensor, eps: float, weight: Weight, bias: torch.Tensor | None,
             cos: torch.Tensor, sin: torch.Tensor, last_pos: torch.Tensor, step: torch.Tensor, start: torch.Tensor,
             q_out: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int,
             scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """RMSNorm(x), the fused q/k/v product (plus `bias`), rotary at each row's position `last_pos + 1 + step`; q
    into `q_out` [B, heads x D], k and v into the caches [B, kv_heads, max_len, D] at slot `start + step`. An int4
    layer's bias is its own: pass None. On Triton, where q/k/v's rows fit `scratch` (`proj_scratch`), the product
    may split its inputs over programs, as its autotuning finds faster."""
    d = k_cache.shape[-1]
    if on_triton(x):
        total = heads + 2 * kv_heads
        fits = scratch is not None and scratch[0].shape[0] >= x.shape[0] and scratch[0].shape[2] >= total * d
        part, counts = scratch if fits else (x, x)
        splits = part.shape[1] if fits else 1
        grid = lambda meta: (total * -(-(d // 2) // meta["BLOCK_R"]) * meta["SPLIT"], x.shape[0])  # noqa: E731
        codes = int4_codes(weight)
        bias = bias if codes is None else weight.bias
        shared = (cos, sin, last_pos, step, start, q_out, k_cache, v_cache, part, counts)
        strides = (q_out.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), eps, splits,
                   pow2(x.shape[0]))
        flags = dict(HEADS=heads, KV_HEADS=kv_heads, D=d, HAS_BIAS=bias is not None, **_launch(x))
        b_ptr = x if bias is None else bias
        if codes is None:
            _kernels().qkv_rope[grid](x, norm, weight, b_ptr, *shared, x.shape[1], x.stride(0), weight.stride(0),
                                      *strides, **flags)
        else:
            q, sz, group = _words(codes)
            _kernels().qkv_rope_int4[grid](x, norm, q, sz, b_ptr, *shared, x.shape[1], x.stride(0), q.stride(0),
                                           sz.shape[1], 1, *strides, GROUP=group, **flags)
        return
    b = x.shape[0]
    y = _product(_rms(x, norm, eps), weight, bias)
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


def attend_scratch(batch: int, heads: int, max_len: int, head_dim: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton attention's working memory for a cache of `max_len` slots: each program's share of a head's
    attention (float32 [B, heads, splits, D + 2]) and a count a head of its finished programs (int32 zeros, which
    the kernel leaves at zero). A step allocates it once; its graph replays over the same buffers."""
    splits = -(-max_len // _kernels().SPLIT_MIN)
    return (torch.empty(batch, heads, splits, head_dim + 2, dtype=torch.float32, device=device),
            torch.zeros(batch, heads, dtype=torch.int32, device=device))


def attend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, prompt_valid: torch.Tensor,
           step: torch.Tensor, start: torch.Tensor, out: torch.Tensor, scale: float,
           scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Attention of q [B, heads x D] over the caches: a slot is visible where `prompt_valid` marks a prompt token
    or it lies in [start, start + step]; out [B, heads x D]. On Triton the cache is split over programs, whose
    shares meet in `scratch` (`attend_scratch`; allocated here if not given)."""
    b, kv_heads, max_len, d = k_cache.shape
    heads = q.shape[1] // d
    if on_triton(q):
        part, counts = scratch if scratch is not None else attend_scratch(b, heads, max_len, d, q.device)
        grid = lambda meta: (heads, -(-max_len // meta["SPLIT_L"]), b)  # noqa: E731
        _kernels().attend[grid](
            q, k_cache, v_cache, prompt_valid, step, start, out, part, counts, max_len, part.shape[2], scale,
            q.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), prompt_valid.stride(0), pow2(b),
            HEADS=heads, KV_HEADS=kv_heads, D=d, BLOCK_D=pow2(d), **_launch(q))
        return
    cols = torch.arange(max_len, device=q.device)
    visible = prompt_valid | ((cols >= start) & (cols <= start + step))[None]
    mask = visible[:, None, None, :]
    # in float32, as the kernel and CUDA's attention kernels compute (a CPU's bf16 attention rounds its scores)
    o = F.scaled_dot_product_attention(q.view(b, heads, 1, d).float(), k_cache.float(), v_cache.float(),
                                       attn_mask=mask, scale=scale, enable_gqa=heads != kv_heads)
    out.copy_(o.reshape(b, heads * d))


def embed(token: torch.Tensor, table: nn.Module, out: torch.Tensor) -> None:
    """out [B, hidden] = the token table's rows `token` [B], in place: an nn.Embedding's, or an int4 table's
    (`Int4Embedding`) dequantized by one Triton launch where its codes are packed for Triton, else by the
    module's own lookup."""
    inner = getattr(table, "table", None)          # an Int4Embedding's Int4Linear
    if type(table) is nn.Embedding:
        torch.index_select(table.weight, 0, token, out=out)
    elif inner is not None and on_triton(out) and inner.packing == "triton":
        q, sz, group = _words(int4_codes(inner))
        k = out.shape[1]
        block = _kernels().EMBED_BLOCK.value
        _kernels().embed_int4[(-(-k // (8 * block)), token.shape[0])](token, q, sz, out, k, q.stride(0), sz.shape[1],
                                                                      out.stride(0), GROUP=group, BLOCK_W=block,
                                                                      **_launch(out))
    else:
        out.copy_(table(token))


def argmax_scratch(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton argmax's working memory: a key a row (int64, at its minimum) and a count a row of its finished
    programs (int32 zeros); the kernel leaves both so."""
    b = logits.shape[0]
    return (torch.full((b,), torch.iinfo(torch.int64).min, dtype=torch.int64, device=logits.device),
            torch.zeros(b, dtype=torch.int32, device=logits.device))


def argmax(logits: torch.Tensor, token: torch.Tensor,
           scratch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """token [B] (int64) = the index of each row's largest logit, the first on ties, as torch.argmax. On Triton, one
    launch: each program reduces a block of the row and the row's last program writes the token."""
    if on_triton(logits):
        keys, counts = scratch if scratch is not None else argmax_scratch(logits)
        block = _kernels().ARGMAX_BLOCK.value
        n = logits.shape[1]
        _kernels().argmax[(-(-n // block), logits.shape[0])](logits, keys, counts, token, n, logits.stride(0),
                                                             BLOCK=block, **_launch(logits))
        return
    torch.argmax(logits, dim=-1, out=token)


def pow2(n: int) -> int:
    """The least power of two >= n (n >= 1): block sizes, and the batch sizes the kernels' tuning tells apart."""
    return 1 << (n - 1).bit_length()
