"""A candidate batch-1 kernel for the compact int4 layout, not yet timed on a GPU: the same arguments as
`sota.compress.int4_triton`'s `_gemv`, with three changes meant to lift its bandwidth (kernels.log: 0.7-1.0 TB/s
on the 3B shapes, against tinygemm's 1.1-2.0):
- codes become floats by their bits (2**23 + q read as a float, less 2**23) instead of int-to-float conversions,
  which run at a quarter of the float rate;
- a program steps along K by whole quantization groups, so each scale and zero broadcasts over its codes and
  nothing is summed inside the loop;
- no reshape or join of the codes: the high and low nibbles meet the even and odd inputs.
Checked against the codes in Triton's CPU interpreter only. `kernels.py --candidate` times it beside the others.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@functools.cache
def _kernel():  # noqa: ANN202
    def gemv_configs():
        return [triton.Config({"BLOCK_N": bn, "GROUPS": u}, num_warps=w, num_stages=st)
                for bn in (4, 8, 16) for u in (1, 2, 4) for w in (2, 4) for st in (2,)]

    @triton.autotune(configs=gemv_configs(), key=["N", "K", "GROUP"])
    @triton.jit
    def _gemv(x_ptr, q_ptr, sz_ptr, y_ptr, N, K, rows, stride_xm, stride_ym,
              GROUP: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr):
        # A program: BLOCK_N output rows, GROUPS quantization groups of codes per step along K, so each scale and
        # zero broadcasts over its group's codes and the sum over K happens once, at the end.
        pid_n, m = tl.program_id(0), tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = rn < N
        u = tl.arange(0, GROUPS)
        j = tl.arange(0, GROUP // 2)                                   # byte j of a group: codes 2j (high), 2j+1
        acc = tl.zeros((BLOCK_N, GROUPS, GROUP // 2), dtype=tl.float32)
        n_groups = K // GROUP
        for g0 in range(0, n_groups, GROUPS):
            g = g0 + u
            g_ok = g < n_groups
            b = tl.load(q_ptr + rn[:, None, None] * (K // 2) + g[None, :, None] * (GROUP // 2) + j[None, None, :],
                        mask=n_ok[:, None, None] & g_ok[None, :, None], other=0)
            # codes to float by their bits: 2**23 + q read as a float, less 2**23. Exact, and it avoids
            # int-to-float conversions, which run at a quarter of the float rate.
            hi = ((b >> 4).to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            lo = ((b & 15).to(tl.int32) | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
            xk = x_ptr + m * stride_xm + g[None, :, None] * GROUP + 2 * j[None, None, :]
            xe = tl.load(xk, mask=g_ok[None, :, None], other=0.0).to(tl.float32)
            xo = tl.load(xk + 1, mask=g_ok[None, :, None], other=0.0).to(tl.float32)
            sz = sz_ptr + (g[None, :, None] * rows + rn[:, None, None]) * 2
            ok = n_ok[:, None, None] & g_ok[None, :, None]
            s = tl.load(sz, mask=ok, other=0.0).to(tl.float32)
            z = tl.load(sz + 1, mask=ok, other=0.0).to(tl.float32)
            acc += s * (hi * xe + lo * xo) + (z - 8.0 * s) * (xe + xo)  # ((q - 8) * s + z) * x, two codes a byte
        y = tl.sum(tl.sum(acc, axis=2), axis=1)
        tl.store(y_ptr + m * stride_ym + rn, y.to(y_ptr.dtype.element_ty), mask=n_ok)
    return _gemv


def launch(x: torch.Tensor, codes: torch.Tensor, scale_and_zero: torch.Tensor, group_size: int,
           out_features: int) -> torch.Tensor:
    """bf16 x [M, in] times the codes (uint8 [out, in / 2]) under scale_and_zero ([groups, out, 2])."""
    m, k = x.shape
    y = torch.empty(m, out_features, dtype=torch.bfloat16, device=x.device)
    _kernel()[lambda meta: (-(-out_features // meta["BLOCK_N"]), m)](
        x, codes, scale_and_zero, y, out_features, k, scale_and_zero.shape[1], x.stride(0), y.stride(0),
        GROUP=group_size)
    return y
