"""Triton kernels of the fused decode step; `sota.models.decode_kernels` launches them (and documents them).

Imported only where Triton is: CUDA builds of torch ship it.
"""
# ruff: noqa: ANN001, ANN201, ANN202 - Triton kernels take untyped pointers and block sizes

from __future__ import annotations

import triton
import triton.language as tl

from sota.utils.triton_support import interpreted


# Autotuning candidates, few because each compiles on first use in a process (the interpreter needs one).
# Products with long rows (K in the thousands) want few rows a program and long strides along K; SmolLM2's
# 576-wide rows, more rows a program.
PROJ = ((1, 512, 4), (1, 1024, 4), (2, 512, 4), (2, 1024, 8), (4, 128, 2), (4, 256, 4), (4, 512, 4),
        (8, 64, 2), (8, 128, 4), (8, 256, 4), (16, 128, 4), (16, 256, 8))          # BLOCK_N, BLOCK_K, warps
ROPE = ((2, 512, 4), (2, 1024, 4), (4, 256, 4), (4, 512, 4), (8, 128, 4), (8, 256, 4), (16, 64, 2),
        (16, 128, 4))                                                             # BLOCK_R, BLOCK_K, warps
ATTEND = ((16, 2), (32, 2), (32, 4), (64, 4), (128, 4))                          # BLOCK_L, warps
NORM_BLOCK: tl.constexpr = 256   # features a step of the RMS reduction: the residual row is one small read
# Compact int4: whole quantization groups a step (GROUPS of them).
PROJ_INT4 = ((1, 4, 4), (1, 8, 4), (2, 2, 4), (2, 4, 4), (4, 1, 4), (4, 2, 4), (8, 1, 4), (8, 2, 8))
ROPE_INT4 = ((2, 2, 4), (2, 4, 4), (4, 1, 4), (4, 2, 4), (8, 1, 4), (8, 2, 4))    # BLOCK_R, GROUPS, warps


def _configs(names, table, one):
    rows = [one] if interpreted() else table
    return [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1]) for row in rows]


@triton.jit
def rnd(v, dt: tl.constexpr):
    # rounded to the model's dtype, as the transformers module that produced the value stores it
    return v.to(dt).to(tl.float32)


@triton.jit
def inv_rms(x_row, K, eps, BLOCK_K: tl.constexpr):
    ss = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        xk = tl.load(x_row + kk, mask=kk < K, other=0.0).to(tl.float32)
        ss += xk * xk
    return tl.rsqrt(tl.sum(ss, axis=0) / K + eps)


@triton.jit
def normed(x_row, nw_ptr, kk, K, rstd, dt: tl.constexpr):
    xk = tl.load(x_row + kk, mask=kk < K, other=0.0).to(tl.float32)
    nw = tl.load(nw_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
    return rnd(nw * rnd(xk * rstd, dt), dt)


@triton.jit
def float_sums(x_row, nw_ptr, w_ptr, rows_a, rows_b, r_ok, K, stride_w, rstd, dt: tl.constexpr,
               NORM: tl.constexpr, TWO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """W[rows_a] . x and (TWO) W[rows_b] . x over float weights, x RMS-normed first (NORM)."""
    acc_a = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        if NORM:
            xk = normed(x_row, nw_ptr, kk, K, rstd, dt)[None, :]
        else:
            xk = tl.load(x_row + kk, mask=kk < K, other=0.0).to(tl.float32)[None, :]
        ok = r_ok[:, None] & (kk < K)[None, :]
        acc_a += tl.load(w_ptr + rows_a[:, None] * stride_w + kk[None, :], mask=ok, other=0.0).to(tl.float32) * xk
        if TWO:
            acc_b += tl.load(w_ptr + rows_b[:, None] * stride_w + kk[None, :], mask=ok, other=0.0).to(tl.float32) * xk
    return tl.sum(acc_a, axis=1), tl.sum(acc_b, axis=1)


@triton.jit
def int4_acc(acc, q_ptr, sz_ptr, rows, r_ok, g, g_ok, j, xe, xo, stride_w, sz_rows, HG: tl.constexpr):
    # Bytes [rows, groups, HG] of compact int4 codes: byte j of a group holds codes 2j (high nibble) and 2j + 1.
    ok = r_ok[:, None, None] & g_ok[None, :, None]
    b = tl.load(q_ptr + rows[:, None, None] * stride_w + g[None, :, None] * HG + j[None, None, :], mask=ok, other=0)
    # codes to floats by their bits (2**23 + q read as a float, less 2**23): exact, and cheaper than conversions
    hi = ((b >> 4).to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    lo = ((b & 15).to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    sz = sz_ptr + (g[None, :, None] * sz_rows + rows[:, None, None]) * 2       # tinygemm's [groups, rows, 2]
    s = tl.load(sz, mask=ok, other=0.0).to(tl.float32)
    z = tl.load(sz + 1, mask=ok, other=0.0).to(tl.float32)
    # sum of ((q - 8) * s + z) * x over the byte's two codes
    return acc + s * (hi * xe[None] + lo * xo[None]) + (z - 8.0 * s) * (xe + xo)[None]


@triton.jit
def int4_sums(x_row, nw_ptr, q_ptr, sz_ptr, rows_a, rows_b, r_ok, K, stride_w, sz_rows, rstd, dt: tl.constexpr,
              NORM: tl.constexpr, TWO: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr,
              GROUPS: tl.constexpr):
    """As `float_sums` over compact int4 codes, GROUPS quantization groups a step: each scale and zero broadcasts
    over its group, and the sum over K happens once, at the end."""
    HG: tl.constexpr = GROUP // 2
    u = tl.arange(0, GROUPS)
    j = tl.arange(0, HG)
    acc_a = tl.zeros((BLOCK_R, GROUPS, HG), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R, GROUPS, HG), dtype=tl.float32)
    n_groups = K // GROUP
    for g0 in range(0, n_groups, GROUPS):
        g = g0 + u
        g_ok = g < n_groups
        ke = g[:, None] * GROUP + 2 * j[None, :]                          # the even features [groups, HG]
        if NORM:
            xe = normed(x_row, nw_ptr, ke, K, rstd, dt)
            xo = normed(x_row, nw_ptr, ke + 1, K, rstd, dt)
        else:
            xe = tl.load(x_row + ke, mask=ke < K, other=0.0).to(tl.float32)
            xo = tl.load(x_row + ke + 1, mask=ke < K, other=0.0).to(tl.float32)
        acc_a = int4_acc(acc_a, q_ptr, sz_ptr, rows_a, r_ok, g, g_ok, j, xe, xo, stride_w, sz_rows, HG)
        if TWO:
            acc_b = int4_acc(acc_b, q_ptr, sz_ptr, rows_b, r_ok, g, g_ok, j, xe, xo, stride_w, sz_rows, HG)
    return tl.sum(tl.sum(acc_a, axis=2), axis=1), tl.sum(tl.sum(acc_b, axis=2), axis=1)


@triton.jit
def proj_body(x_ptr, w_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, N, K, stride_x, stride_w, stride_y, stride_r, sz_rows, eps,
              NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, INT4: tl.constexpr,
              GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUPS: tl.constexpr):
    pid, b = tl.program_id(0), tl.program_id(1)
    dt: tl.constexpr = y_ptr.dtype.element_ty
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    x_row = x_ptr + b * stride_x
    rstd = 1.0
    if NORM:
        rstd = inv_rms(x_row, K, eps, NORM_BLOCK)
    # GATED: the up rows sit N rows below the gate rows
    if INT4:
        y, up = int4_sums(x_row, nw_ptr, w_ptr, sz_ptr, rn, rn + N, n_ok, K, stride_w, sz_rows, rstd, dt,
                          NORM, GATED, GROUP, BLOCK_N, GROUPS)
    else:
        y, up = float_sums(x_row, nw_ptr, w_ptr, rn, rn + N, n_ok, K, stride_w, rstd, dt, NORM, GATED, BLOCK_N,
                           BLOCK_K)
    y = rnd(y, dt)
    if GATED:
        y = rnd(rnd(y * tl.sigmoid(y), dt) * rnd(up, dt), dt)
    if RESIDUAL:
        y = rnd(y + tl.load(r_ptr + b * stride_r + rn, mask=n_ok, other=0.0).to(tl.float32), dt)
    tl.store(y_ptr + b * stride_y + rn, y.to(dt), mask=n_ok)


@triton.autotune(configs=_configs(("BLOCK_N", "BLOCK_K"), PROJ, (4, 64, 1)),
                 key=["N", "K", "NORM", "GATED", "RESIDUAL"])
@triton.jit
def proj(x_ptr, w_ptr, y_ptr, r_ptr, nw_ptr, N, K, stride_x, stride_w, stride_y, stride_r, eps,
         NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr,
         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    proj_body(x_ptr, w_ptr, w_ptr, y_ptr, r_ptr, nw_ptr, N, K, stride_x, stride_w, stride_y, stride_r, 0, eps,
              NORM, GATED, RESIDUAL, False, 2, BLOCK_N, BLOCK_K, 1)


@triton.autotune(configs=_configs(("BLOCK_N", "GROUPS"), PROJ_INT4, (4, 2, 1)),
                 key=["N", "K", "GROUP", "NORM", "GATED", "RESIDUAL"])
@triton.jit
def proj_int4(x_ptr, q_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, N, K, stride_x, stride_w, stride_y, stride_r, sz_rows, eps,
              NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, GROUP: tl.constexpr,
              BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
    proj_body(x_ptr, q_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, N, K, stride_x, stride_w, stride_y, stride_r, sz_rows, eps,
              NORM, GATED, RESIDUAL, True, GROUP, BLOCK_N, 16, GROUPS)


@triton.jit
def qkv_rope_body(x_ptr, nw_ptr, w_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, K, stride_x, stride_w, sz_rows, stride_q, stride_cb, stride_ch, stride_cl,
                  eps, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr,
                  INT4: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUPS: tl.constexpr):
    # A program owns BLOCK_R rotary pairs of one head: rows j and j + D/2, which rotary mixes.
    pid, b = tl.program_id(0), tl.program_id(1)
    dt: tl.constexpr = q_ptr.dtype.element_ty
    HALF: tl.constexpr = D // 2
    per_head = tl.cdiv(HALF, BLOCK_R)
    head = pid // per_head
    j = (pid % per_head) * BLOCK_R + tl.arange(0, BLOCK_R)
    j_ok = j < HALF
    rows = head * D + j
    x_row = x_ptr + b * stride_x
    rstd = inv_rms(x_row, K, eps, NORM_BLOCK)
    if INT4:
        y1, y2 = int4_sums(x_row, nw_ptr, w_ptr, sz_ptr, rows, rows + HALF, j_ok, K, stride_w, sz_rows, rstd, dt,
                           True, True, GROUP, BLOCK_R, GROUPS)
    else:
        y1, y2 = float_sums(x_row, nw_ptr, w_ptr, rows, rows + HALF, j_ok, K, stride_w, rstd, dt, True, True,
                            BLOCK_R, BLOCK_K)
    if HAS_BIAS:
        y1 += tl.load(bias_ptr + rows, mask=j_ok, other=0.0).to(tl.float32)
        y2 += tl.load(bias_ptr + rows + HALF, mask=j_ok, other=0.0).to(tl.float32)
    y1, y2 = rnd(y1, dt), rnd(y2, dt)
    step = tl.load(step_ptr)
    pos = tl.load(last_pos_ptr + b) + 1 + step
    slot = tl.load(start_ptr) + step
    c1 = tl.load(cos_ptr + pos * D + j, mask=j_ok, other=0.0).to(tl.float32)
    c2 = tl.load(cos_ptr + pos * D + HALF + j, mask=j_ok, other=0.0).to(tl.float32)
    s1 = tl.load(sin_ptr + pos * D + j, mask=j_ok, other=0.0).to(tl.float32)
    s2 = tl.load(sin_ptr + pos * D + HALF + j, mask=j_ok, other=0.0).to(tl.float32)
    # x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1)
    r1 = rnd(rnd(y1 * c1, dt) + rnd(-y2 * s1, dt), dt)
    r2 = rnd(rnd(y2 * c2, dt) + rnd(y1 * s2, dt), dt)
    hv = tl.zeros((BLOCK_R,), dtype=tl.int32) + head      # the head as a vector: masks of the block's shape
    is_q = j_ok & (hv < HEADS)
    is_k = j_ok & (hv >= HEADS) & (hv < HEADS + KV_HEADS)
    is_v = j_ok & (hv >= HEADS + KV_HEADS)
    q_out = q_ptr + b * stride_q + rows
    tl.store(q_out, r1.to(dt), mask=is_q)
    tl.store(q_out + HALF, r2.to(dt), mask=is_q)
    kv = (head - HEADS) % KV_HEADS
    cache = b * stride_cb + kv * stride_ch + slot * stride_cl + j
    tl.store(kc_ptr + cache, r1.to(dt), mask=is_k)
    tl.store(kc_ptr + cache + HALF, r2.to(dt), mask=is_k)
    tl.store(vc_ptr + cache, y1.to(dt), mask=is_v)
    tl.store(vc_ptr + cache + HALF, y2.to(dt), mask=is_v)


@triton.autotune(configs=_configs(("BLOCK_R", "BLOCK_K"), ROPE, (4, 64, 1)), key=["K", "HEADS", "KV_HEADS", "D"])
@triton.jit
def qkv_rope(x_ptr, nw_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
             q_ptr, kc_ptr, vc_ptr, K, stride_x, stride_w, stride_q, stride_cb, stride_ch, stride_cl, eps,
             HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr,
             BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    qkv_rope_body(x_ptr, nw_ptr, w_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, K, stride_x, stride_w, 0, stride_q, stride_cb, stride_ch, stride_cl, eps,
                  HEADS, KV_HEADS, D, HAS_BIAS, False, 2, BLOCK_R, BLOCK_K, 1)


@triton.autotune(configs=_configs(("BLOCK_R", "GROUPS"), ROPE_INT4, (4, 2, 1)),
                 key=["K", "GROUP", "HEADS", "KV_HEADS", "D"])
@triton.jit
def qkv_rope_int4(x_ptr, nw_ptr, q_codes_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, K, stride_x, stride_w, sz_rows, stride_q, stride_cb, stride_ch, stride_cl,
                  eps, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr,
                  GROUP: tl.constexpr, BLOCK_R: tl.constexpr, GROUPS: tl.constexpr):
    qkv_rope_body(x_ptr, nw_ptr, q_codes_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, K, stride_x, stride_w, sz_rows, stride_q, stride_cb, stride_ch, stride_cl,
                  eps, HEADS, KV_HEADS, D, HAS_BIAS, True, GROUP, BLOCK_R, 16, GROUPS)


@triton.autotune(configs=_configs(("BLOCK_L",), ATTEND, (16, 1)), key=["L", "HEADS", "KV_HEADS", "D"])
@triton.jit
def attend(q_ptr, kc_ptr, vc_ptr, valid_ptr, step_ptr, start_ptr, o_ptr, L, scale,
            stride_q, stride_cb, stride_ch, stride_cl, stride_valid,
            HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
            BLOCK_L: tl.constexpr):
    h, b = tl.program_id(0), tl.program_id(1)
    dt: tl.constexpr = o_ptr.dtype.element_ty
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + b * stride_q + h * D + d, mask=d_ok, other=0.0).to(tl.float32)
    kv = h // (HEADS // KV_HEADS)
    start = tl.load(start_ptr)
    seen = start + tl.load(step_ptr) + 1            # the cache's slots up to this step's
    base = b * stride_cb + kv * stride_ch
    m_i = tl.max(tl.full((BLOCK_L,), -1e30, tl.float32), axis=0)
    l_i = tl.sum(tl.zeros((BLOCK_L,), tl.float32), axis=0)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for l0 in range(0, seen, BLOCK_L):
        cols = l0 + tl.arange(0, BLOCK_L)
        in_range = cols < seen
        prompt = tl.load(valid_ptr + b * stride_valid + cols, mask=in_range, other=0)
        visible = in_range & ((prompt != 0) | (cols >= start))
        tile = base + cols[:, None] * stride_cl + d[None, :]
        ok = in_range[:, None] & d_ok[None, :]
        k = tl.load(kc_ptr + tile, mask=ok, other=0.0).to(tl.float32)
        s = tl.where(visible, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(vc_ptr + tile, mask=ok, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        m_i = m_new
    tl.store(o_ptr + b * stride_q + h * D + d, (acc / l_i).to(dt), mask=d_ok)
