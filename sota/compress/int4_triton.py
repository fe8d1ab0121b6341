"""Triton kernels for the compact int4 layout on CUDA (``quant.int4_kernel=triton``).

The codes stay as ``sota.export`` stores them: uint8 [rows, in / 2], two codes a byte, the even input feature in
the high nibble; scales and zeros are tinygemm's ``scale_and_zero`` ([groups, rows, 2], bf16), and a weight is
``(q - 8) * scale + zero``. Two kernels read them:

- for a few rows of activations (a decode step), the fused decode step's int4 product
  (``sota.models.decode_kernels.int4_rows``): each program streams a block of output rows' codes as int32 words,
  takes each word's products against x in f16x2 and sums the words in fp32;
- ``_gemm`` for many rows (prefill, the encoder): the codes dequantized tile by tile into a tensor-core product.

Neither calls cuBLAS, so an all-int4 model allocates no cuBLAS workspace. On an H200
(experiments/2026-12-05_int4_kernels_h200) ``_gemm`` takes 128 rows through the Llama-3.2-3B shapes' products
1.9-4.4x faster than tinygemm. Triton is imported only when a kernel first runs; ``available()`` says whether it
can.
"""
from __future__ import annotations

import functools

import torch

from sota.models import decode_kernels
from sota.utils.triton_support import autotuned, available, tuning_options  # noqa: F401 - callers ask this module

# Activation rows up to which the reduction kernel runs (one program per row and block of outputs); above them
# the tensor-core kernel, whose tiles span at least 16 rows.
GEMV_MAX_ROWS = 4


@functools.cache
def _kernels():  # noqa: ANN202 - the jitted functions, built once Triton is needed
    import triton
    import triton.language as tl

    def gemm_configs():
        configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
                   for bm in (16, 64) for bn in (64, 128) for bk in (64, 128) for w in (4,) for s in (3,)]
        return configs if autotuned() else configs[:1]

    # M_POW2 (the rows rounded up to a power of two) is a key of the tuning alone: an evaluation's batched prompts
    # and a measurement's single one want different tiles, and the kept timings outlive the process.
    @triton.autotune(configs=gemm_configs(), key=["N", "K", "GROUP", "M_POW2"], **tuning_options())
    @triton.jit(do_not_specialize=["M_POW2"])
    def _gemm(x_ptr, q_ptr, sz_ptr, y_ptr, M, N, K, rows, stride_xm, stride_ym, M_POW2,
              GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_m, pid_n = tl.program_id(0), tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok, n_ok = rm < M, rn < N
        half = tl.arange(0, BLOCK_K // 2)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 // 2 + half
            b = tl.load(q_ptr + rn[:, None] * (K // 2) + kk[None, :], mask=n_ok[:, None] & (kk < K // 2)[None, :],
                        other=0)
            q = tl.reshape(tl.join((b >> 4).to(tl.float32), (b & 15).to(tl.float32)), (BLOCK_N, BLOCK_K))
            # a scale and a zero per (row, input feature): any BLOCK_K, whatever the group size
            kx = k0 + tl.arange(0, BLOCK_K)
            sz = sz_ptr + ((kx // GROUP)[None, :] * rows + rn[:, None]) * 2
            ok = n_ok[:, None] & (kx < K)[None, :]
            s = tl.load(sz, mask=ok, other=0.0).to(tl.float32)
            z = tl.load(sz + 1, mask=ok, other=0.0).to(tl.float32)
            w = ((q - 8.0) * s + z).to(tl.bfloat16)                     # [BLOCK_N, BLOCK_K]
            x = tl.load(x_ptr + rm[:, None] * stride_xm + kx[None, :], mask=m_ok[:, None] & (kx < K)[None, :],
                        other=0.0)
            acc = tl.dot(x, tl.trans(w), acc)
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])

    from sota.models import decode_triton

    # the row kernel too, for experiments/2026-12-05_int4_kernels_h200/kernels.py, which reads its best config
    return decode_triton.proj_int4, _gemm


def _launch(x: torch.Tensor, codes: torch.Tensor, scale_and_zero: torch.Tensor, group_size: int,
            out_features: int) -> torch.Tensor:
    _, gemm = _kernels()
    m, k = x.shape
    rows = scale_and_zero.shape[1]
    y = torch.empty(m, out_features, dtype=torch.bfloat16, device=x.device)
    if m <= GEMV_MAX_ROWS:
        decode_kernels.int4_rows(x, codes, scale_and_zero, group_size, y)
    else:
        gemm[lambda meta: (-(-m // meta["BLOCK_M"]), -(-out_features // meta["BLOCK_N"]))](
            x, codes, scale_and_zero, y, m, out_features, k, rows, x.stride(0), y.stride(0), decode_kernels.pow2(m),
            GROUP=group_size)
    return y


@torch.library.custom_op("sota::int4_mm", mutates_args=())
def int4_mm(x: torch.Tensor, codes: torch.Tensor, scale_and_zero: torch.Tensor, group_size: int,
            out_features: int) -> torch.Tensor:
    """bf16 ``x`` [M, in] (contiguous) times the codes: bf16 [M, out_features]. An opaque op to torch.compile,
    which captures it in the decode step's CUDA graph like any other kernel."""
    return _launch(x, codes, scale_and_zero, group_size, out_features)


@int4_mm.register_fake
def _(x, codes, scale_and_zero, group_size, out_features):  # noqa: ANN001, ANN202
    return x.new_empty(x.shape[0], out_features, dtype=torch.bfloat16)
