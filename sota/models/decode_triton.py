"""Triton kernels of the fused decode step; `sota.models.decode_kernels` launches them (and documents them).

Imported only where Triton is: CUDA builds of torch ship it.
"""
# ruff: noqa: ANN001, ANN201, ANN202 - Triton kernels take untyped pointers and block sizes

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from sota.utils.triton_support import autotuned, interpreted, tuning_options


# Autotuning candidates, few because each compiles on first use in a process (the interpreter, and
# SOTA_TRITON_AUTOTUNE=0, take one).
# Products with long rows (K in the thousands) want few rows a program and long strides along K; SmolLM2's
# 576-wide rows, more rows a program. STAGES > 1 has Triton load steps ahead through shared memory, which keeps
# more bytes in flight where a product has few programs.
# SPLIT > 1 splits K into that many parts, one program each, where `split_k` allows: more programs, so more bytes
# in flight, for products with few rows and long ones. SPLIT = 3 takes a row of 3 x 1024 features (the 3B shape's
# hidden size) in one step a program.
PROJ = ((1, 512, 1, 1, 4), (1, 1024, 1, 1, 4), (2, 512, 1, 1, 4), (2, 1024, 1, 1, 8), (4, 128, 1, 1, 2),
        (4, 256, 1, 1, 4), (4, 512, 1, 1, 4), (8, 64, 1, 1, 2), (8, 128, 1, 1, 4), (8, 256, 1, 1, 4),
        (16, 128, 1, 1, 4), (16, 256, 1, 1, 8), (1, 512, 3, 1, 4), (2, 512, 3, 1, 4), (2, 1024, 3, 1, 8),
        (4, 256, 3, 1, 4), (4, 1024, 1, 1, 8), (8, 1024, 1, 1, 8), (2, 512, 1, 2, 4), (2, 1024, 1, 2, 8),
        (4, 256, 1, 4, 4), (4, 512, 1, 4, 4), (2, 1024, 1, 3, 8))           # BLOCK_N, BLOCK_K, STAGES, SPLIT, warps
ROPE = ((2, 512, 1, 1, 4), (2, 1024, 1, 1, 4), (4, 256, 1, 1, 4), (4, 512, 1, 1, 4), (8, 128, 1, 1, 4),
        (8, 256, 1, 1, 4), (16, 64, 1, 1, 2), (16, 128, 1, 1, 4), (2, 512, 3, 1, 4), (4, 256, 3, 1, 4),
        (4, 1024, 1, 1, 8), (8, 1024, 1, 1, 8), (2, 1024, 1, 3, 8),
        (4, 512, 1, 3, 4))                                                    # BLOCK_R, BLOCK_K, STAGES, SPLIT, warps
# SOTA_TRITON_AUTOTUNE=0: rows of up to 128 in one step, longer rows in several, split in two where they may
PROJ_ONE = (4, 128, 1, 2, 1)
ROPE_ONE = (4, 128, 1, 2, 1)
SPLIT_MAX = 8                # the most parts of a split product or q/k/v (sizes decode_kernels.proj_scratch)
# Attention splits the cache into SPLIT_L slots a program; the last program of a head merges their shares. A
# program's first BLOCK_L slots load before it waits on the kernel before (`attend`): rows whose SPLIT_L is BLOCK_L
# load all of theirs then.
ATTEND = ((32, 32, 2), (64, 32, 2), (64, 64, 4), (128, 64, 4), (256, 64, 4), (512, 64, 4), (128, 128, 4),
          (256, 256, 8))                                                                      # SPLIT_L, BLOCK_L, warps
ATTEND_ONE = (16, 8, 1)      # SOTA_TRITON_AUTOTUNE=0: small, so short test caches still split, in two tiles
SPLIT_MIN = min(row[0] for row in ATTEND + (ATTEND_ONE,))     # sizes the shares' buffer
SHARES = tl.constexpr(16)    # shares the merge loads at once
ARGMAX_BLOCK = tl.constexpr(4096)   # logits a program of the argmax
KEY_MIN = tl.constexpr(-2**63)      # the argmax's empty key (decode_kernels.argmax_scratch starts there)
EMBED_BLOCK = tl.constexpr(64)   # words (8 features each) a program of the int4 token lookup
NORM_BLOCK = tl.constexpr(1024)  # features a load of the RMS reduction (four loads a step)
# bf16 and fp16 models on a device multiply int4 codes in f16x2, two codes an instruction (`word_dot`); the inputs
# are scaled by X_SCALE into fp16 so a word's four products a lane stay in its range: inputs up to 2**17 in
# magnitude; under 2**-8 they keep fewer bits (fp16 subnormals, spaced 2**-18 in the inputs' units). Triton's
# interpreter runs no inline assembly: there, and for float32 models, the float32 form runs.
PACKED = tl.constexpr(not interpreted())
X_SCALE = tl.constexpr(2.0 ** -6)
# Compact int4, read as int32 words of 8 codes: BLOCK_W words of each row a step, 4 a thread (16-byte loads). Few
# rows a program and long steps along K won on an H100 with the weights cold, as a step streams them. AHEAD = 1
# loads each step's codes and scales one step ahead, in registers (`int4_sums`).
PROJ_INT4 = ((4, 128, 1, 1, 0, 2), (4, 128, 1, 1, 0, 4), (8, 128, 1, 1, 0, 2), (8, 128, 1, 1, 0, 4),
             (16, 128, 1, 1, 0, 4), (8, 64, 1, 1, 0, 1), (8, 64, 1, 1, 0, 2), (16, 64, 1, 1, 0, 2),
             (32, 64, 1, 1, 0, 2), (8, 64, 3, 1, 0, 2), (4, 128, 1, 2, 0, 4), (4, 128, 1, 4, 0, 4),
             (8, 128, 1, 4, 0, 4), (4, 64, 1, 2, 0, 2), (4, 64, 1, 4, 0, 2), (8, 64, 1, 4, 0, 2), (8, 64, 1, 8, 0, 2),
             (8, 64, 1, 1, 1, 2), (16, 64, 1, 1, 1, 2), (32, 64, 1, 1, 1, 2), (4, 128, 1, 2, 1, 4),
             (8, 64, 1, 4, 1, 2), (4, 128, 1, 3, 0, 4), (8, 128, 1, 3, 0, 4),
             (4, 128, 1, 8, 0, 4))                                   # BLOCK_N, BLOCK_W, STAGES, SPLIT, AHEAD, warps
PROJ_INT4_ONE = (8, 4, 1, 2, 1, 1)  # SOTA_TRITON_AUTOTUNE=0: short steps, split in two where they may, loads ahead
ROPE_INT4 = ((2, 128, 1, 1, 0, 1), (2, 128, 1, 1, 0, 2), (4, 128, 1, 1, 0, 2), (4, 128, 1, 1, 0, 4),
             (2, 64, 1, 1, 0, 1), (4, 64, 1, 1, 0, 2), (8, 64, 1, 1, 0, 2), (8, 32, 1, 1, 0, 4), (4, 128, 1, 1, 1, 4),
             (4, 64, 1, 1, 1, 2), (8, 64, 1, 1, 1, 2), (2, 128, 1, 3, 0, 4), (4, 128, 1, 3, 0, 4),
             (2, 64, 1, 3, 0, 2))                             # BLOCK_R, BLOCK_W, STAGES, SPLIT, AHEAD, warps
ROPE_INT4_ONE = (4, 4, 1, 2, 1, 1)


def whole_row(args):
    """The row in one step along K: its RMS comes from the product's own load."""
    return args["K"] <= args["BLOCK_K"]


def whole_words(args):
    """As `whole_row`, for int4 codes read as words of 8."""
    return args["K"] // 8 <= args["BLOCK_W"]


def long_row(args):
    """The row runs past the RMS pass's first four loads (`inv_rms`): the pass loops over the rest."""
    return args["K"] > 4 * NORM_BLOCK.value


def even_words(args):
    """No bounds checks along K where its words split into whole steps."""
    return args["K"] // 8 % args["BLOCK_W"] == 0


def split_k(args):
    """The table's SPLIT where a product may split K, else 1: its launch has room for the parts' sums (SPLITS), and
    the parts share its steps evenly."""
    step = 8 * args["BLOCK_W"] if "BLOCK_W" in args else args["BLOCK_K"]
    split = args["SPLIT"]
    if split > args["SPLITS"] or triton.cdiv(args["K"], step) % split:
        return 1
    return split


TUNING = tuning_options()   # the autotuners' timings kept on disk, where this Triton can
# Every autotuned kernel takes BATCH, the batch rounded up to a power of two, as a key of its tuning alone: the
# blocks that win at batch 64 (evaluation) need not win at batch 1 (measurement), and the kept timings outlive the
# process.


def _configs(names, table, one):
    rows = table if autotuned() else [one]
    return [triton.Config(dict(zip(names, row[:-1])), num_warps=row[-1]) for row in rows]


@triton.jit
def rnd(v, dt: tl.constexpr):
    # rounded to the model's dtype, as the transformers module that produced the value stores it
    return v.to(dt).to(tl.float32)


@triton.jit
def squares(x_row, k0, K, BLOCK_K: tl.constexpr):
    # the sum of squares of features [k0, k0 + 4 BLOCK_K) of a row, in four loads issued together
    k1 = k0 + tl.arange(0, BLOCK_K)
    k2, k3, k4 = k1 + BLOCK_K, k1 + 2 * BLOCK_K, k1 + 3 * BLOCK_K
    a = tl.load(x_row + k1, mask=k1 < K, other=0.0).to(tl.float32)
    b = tl.load(x_row + k2, mask=k2 < K, other=0.0).to(tl.float32)
    c = tl.load(x_row + k3, mask=k3 < K, other=0.0).to(tl.float32)
    d = tl.load(x_row + k4, mask=k4 < K, other=0.0).to(tl.float32)
    return (a * a + b * b) + (c * c + d * d)


@triton.jit
def inv_rms(x_row, K, eps, BLOCK_K: tl.constexpr, LONG: tl.constexpr):
    # The RMS scale of a row, called once a product's first step of loads is out: the row's first 4 BLOCK_K
    # features (all of rows up to 4096 long) load in four loads while those are in flight, so their round trips
    # overlap. The barrier keeps the compiler from issuing the product's loads after these; so does any loop, so
    # only LONG rows (K > 4 BLOCK_K) loop over the rest, four blocks a step.
    tl.debug_barrier()
    ss = squares(x_row, 0, K, BLOCK_K)
    if LONG:
        for k0 in range(4 * BLOCK_K, K, 4 * BLOCK_K):
            ss += squares(x_row, k0, K, BLOCK_K)
    return rsqrt_mean(ss, K, eps)


@triton.jit
def rsqrt_mean(squares, K, eps):
    # transformers' RMSNorm scale from a block of squared features (zeros past K)
    return tl.rsqrt(tl.sum(squares, axis=0) / K + eps)


@triton.jit
def rms_scaled(x, nw, rstd, dt: tl.constexpr):
    # transformers' RMSNorm of loaded values: x / rms rounded to the dtype, times the norm weight, rounded again
    return rnd(nw * rnd(x * rstd, dt), dt)


@triton.jit
def last_to_finish(count_ptr, programs):
    """Counts this program as finished; True for the last of `programs` sharing `count_ptr`, which then sees every
    other program's writes (each thread's are done before the count moves; acq_rel publishes them)."""
    tl.debug_barrier()
    return tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu") == programs - 1


@triton.jit
def prior_done(PDL: tl.constexpr):
    """PDL (a launch as a programmatic dependent, `decode_kernels`): waits for the kernel before this one to finish
    (its writes are visible after), then lets the next kernel launch, whose programs issue their weights' loads
    while this one runs. A kernel reads nothing an earlier one writes before this call."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def float_weights(w_ptr, rows_a, rows_b, r_ok, k0, hi, stride_w, TWO: tl.constexpr, BLOCK_K: tl.constexpr):
    kk = k0 + tl.arange(0, BLOCK_K)
    ok = r_ok[:, None] & (kk < hi)[None, :]
    w_a = tl.load(w_ptr + rows_a[:, None] * stride_w + kk[None, :], mask=ok, other=0.0)
    w_b = w_a
    if TWO:
        w_b = tl.load(w_ptr + rows_b[:, None] * stride_w + kk[None, :], mask=ok, other=0.0)
    return w_a, w_b


@triton.jit
def float_inputs(x_row, nw_ptr, k0, hi, NORM: tl.constexpr, BLOCK_K: tl.constexpr):
    kk = k0 + tl.arange(0, BLOCK_K)
    k_ok = kk < hi
    xk = tl.load(x_row + kk, mask=k_ok, other=0.0).to(tl.float32)
    nw = xk
    if NORM:
        nw = tl.load(nw_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
    return xk, nw


@triton.jit
def float_loads(x_row, nw_ptr, w_ptr, rows_a, rows_b, r_ok, k0, hi, stride_w, NORM: tl.constexpr,
                TWO: tl.constexpr, BLOCK_K: tl.constexpr):
    # One step's loads of float weights, inputs and norm weights, issued together: a step waits on memory once.
    w_a, w_b = float_weights(w_ptr, rows_a, rows_b, r_ok, k0, hi, stride_w, TWO, BLOCK_K)
    xk, nw = float_inputs(x_row, nw_ptr, k0, hi, NORM, BLOCK_K)
    return w_a, w_b, xk, nw


@triton.jit
def float_step(acc_a, acc_b, w_a, w_b, xk, nw, rstd, dt: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr):
    if NORM:
        xk = rms_scaled(xk, nw, rstd, dt)
    acc_a += w_a.to(tl.float32) * xk[None, :]
    if TWO:
        acc_b += w_b.to(tl.float32) * xk[None, :]
    return acc_a, acc_b


@triton.jit
def float_sums(x_row, nw_ptr, w_ptr, rows_a, rows_b, r_ok, K, lo, hi, stride_w, eps, dt: tl.constexpr,
               NORM: tl.constexpr, TWO: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
               STAGES: tl.constexpr, WHOLE: tl.constexpr, LONG: tl.constexpr, PDL: tl.constexpr):
    """W[rows_a] . x and (TWO) W[rows_b] . x over float weights and inputs [lo, hi), x RMS-normed first (NORM).
    The first step's weights load before the wait on the kernel before (`prior_done`), and its inputs before the
    RMS pass, whose round trips to memory then overlap theirs; WHOLE (K <= BLOCK_K: the row in one step) takes the
    RMS from that step's own inputs, with no pass at all."""
    acc_a = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    w_a, w_b = float_weights(w_ptr, rows_a, rows_b, r_ok, lo, hi, stride_w, TWO, BLOCK_K)
    prior_done(PDL)
    xk, nw = float_inputs(x_row, nw_ptr, lo, hi, NORM, BLOCK_K)
    rstd = 1.0
    if NORM:
        if WHOLE:
            rstd = rsqrt_mean(xk * xk, K, eps)
        else:
            rstd = inv_rms(x_row, K, eps, NORM_BLOCK, LONG)    # while the first step's loads are in flight
    acc_a, acc_b = float_step(acc_a, acc_b, w_a, w_b, xk, nw, rstd, dt, NORM, TWO)
    for k0 in tl.range(lo + BLOCK_K, hi, BLOCK_K, num_stages=STAGES):  # STAGES > 1: loads run ahead (shared memory)
        w_a, w_b, xk, nw = float_loads(x_row, nw_ptr, w_ptr, rows_a, rows_b, r_ok, k0, hi, stride_w, NORM, TWO,
                                       BLOCK_K)
        acc_a, acc_b = float_step(acc_a, acc_b, w_a, w_b, xk, nw, rstd, dt, NORM, TWO)
    return tl.sum(acc_a, axis=1), tl.sum(acc_b, axis=1)


@triton.jit
def code_float(u, c: tl.constexpr, PRECISE: tl.constexpr):
    """Code c of each int32 word u (8 codes; byte j holds codes 2j, high nibble, and 2j + 1) as the float 2**e + q:
    the code moved into the top mantissa bits of 16.0 (e = 4, bits 19-22) or, for odd codes, of 256.0 (e = 8, bits
    15-18), so one shift serves two codes: a shift and a mask-and-or a code, no conversion. PRECISE (float32
    models): q itself, as 2**23 + q less 2**23, so no sum carries the 2**e terms."""
    at = 8 * (c // 2) + 4 * (1 - c % 2)                  # the code's bit position in its word
    if PRECISE:
        to = 0
        base = 0x4B000000                                # 2**23
    elif c % 2 == 0:
        to = 19
        base = 0x41800000                                # 16.0
    else:
        to = 15
        base = 0x43800000                                # 256.0
    if to >= at:
        v = u << (to - at)
    else:
        v = u >> (at - to)                              # arithmetic: the sign bits land above the mantissa
    f = ((v & (15 << to)) | base).to(tl.float32, bitcast=True)
    if PRECISE:
        f -= 8388608.0
    return f


@triton.jit
def pair_lo(v):   # the first 16-bit float of a 32-bit pair (bf16: as a float32 by its bits)
    return (v << 16).to(tl.float32, bitcast=True)


@triton.jit
def pair_hi(v):
    return (v & -65536).to(tl.float32, bitcast=True)


@triton.jit
def word_tile(q_ptr, sz_ptr, rows, ok, ww, stride_w, sz_rows, one, WPG: tl.constexpr):
    # Words [rows, BLOCK_W] of compact int4 codes, and each word's (scale, zero) bf16 pair as one int32. `one`
    # (never specialized) keeps the compiler from reading rows as the contiguous axis of the pairs' load, which
    # would transpose the tile.
    u = tl.load(q_ptr + rows[:, None] * stride_w + ww[None, :], mask=ok, other=0)
    sz = tl.load(sz_ptr + (ww // WPG)[None, :] * sz_rows + rows[:, None] * one, mask=ok, other=0)
    return u, sz


@triton.jit
def int4_words(acc, u, sz, x0, x1, x2, x3, x4, x5, x6, x7, ex, xs, PRECISE: tl.constexpr):
    # Words u [rows, BLOCK_W] of compact int4 codes, with their (scale, zero) pairs sz, against the inputs of their
    # 8 codes.
    p = code_float(u, 0, PRECISE) * x0[None, :] - ex[None, :]
    p += code_float(u, 1, PRECISE) * x1[None, :]
    p += code_float(u, 2, PRECISE) * x2[None, :]
    p += code_float(u, 3, PRECISE) * x3[None, :]
    p += code_float(u, 4, PRECISE) * x4[None, :]
    p += code_float(u, 5, PRECISE) * x5[None, :]
    p += code_float(u, 6, PRECISE) * x6[None, :]
    p += code_float(u, 7, PRECISE) * x7[None, :]
    # p = sum(q * x) - 8 * sum(x) over the word; a weight is (q - 8) * scale + zero
    return acc + pair_lo(sz) * p + pair_hi(sz) * xs[None, :]


@triton.jit
def f16_pair(a, b):
    # two float32 as one f16x2 word, a in the low half
    return tl.inline_asm_elementwise("cvt.rn.f16x2.f32 $0, $2, $1;", "=r,f,f", [a, b], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def word_dot(u, x15, x04, x37, x26):
    # sum of (q - 8) * x over a word's 8 codes, as float32: each mask-and-or makes two codes fp16 1024 + q (bits
    # 0-3 and 16-19) or 1024 + 16 q (bits 4-7 and 20-23), one subtraction or multiply-add a pair makes them q - 8
    # exactly, and four f16x2 multiply-adds take the products against the inputs' pairs (codes 1 and 5, 0 and 4,
    # 3 and 7, 2 and 6: x15 holds x1 low and x5 high).
    return tl.inline_asm_elementwise(
        """{
        .reg .b32 h, t0, t1, t2, t3, acc, m8, s16, o16;
        .reg .b16 lo, hi;
        .reg .f32 flo, fhi;
        mov.b32 m8, 0x64086408;
        mov.b32 s16, 0x2c002c00;
        mov.b32 o16, 0xd480d480;
        shr.u32 h, $1, 8;
        lop3.b32 t0, $1, 0x000f000f, 0x64006400, 0xea;
        lop3.b32 t1, $1, 0x00f000f0, 0x64006400, 0xea;
        lop3.b32 t2, h, 0x000f000f, 0x64006400, 0xea;
        lop3.b32 t3, h, 0x00f000f0, 0x64006400, 0xea;
        sub.f16x2 t0, t0, m8;
        fma.rn.f16x2 t1, t1, s16, o16;
        sub.f16x2 t2, t2, m8;
        fma.rn.f16x2 t3, t3, s16, o16;
        mul.rn.f16x2 acc, t0, $2;
        fma.rn.f16x2 acc, t1, $3, acc;
        fma.rn.f16x2 acc, t2, $4, acc;
        fma.rn.f16x2 acc, t3, $5, acc;
        mov.b32 {lo, hi}, acc;
        cvt.f32.f16 flo, lo;
        cvt.f32.f16 fhi, hi;
        add.f32 $0, flo, fhi;
        }""",
        "=f,r,r,r,r,r", [u, x15, x04, x37, x26], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def int4_packed(acc, u, sz, x15, x04, x37, x26, xs):
    # As `int4_words` with `word_dot`'s f16x2 products
    p = word_dot(u, x15[None, :], x04[None, :], x37[None, :], x26[None, :])
    return acc + pair_lo(sz) * p + pair_hi(sz) * xs[None, :]


@triton.jit
def load_pair(row, k, k_ok, c: tl.constexpr, dt: tl.constexpr):
    # features k + c and k + c + 1 (c even) of a row as float32: a bf16 row's as one 32-bit load
    if dt == tl.bfloat16:
        v = tl.load(row.to(tl.pointer_type(tl.int32)) + (k + c) // 2, mask=k_ok, other=0)
        return pair_lo(v), pair_hi(v)
    a = tl.load(row + k + c, mask=k_ok, other=0.0).to(tl.float32)
    b = tl.load(row + k + c + 1, mask=k_ok, other=0.0).to(tl.float32)
    return a, b


@triton.jit
def step_words(w0, hi, BLOCK_W: tl.constexpr, EVEN: tl.constexpr):
    # a step's words [w0, w0 + BLOCK_W) and which lie before `hi`
    ww = w0 + tl.arange(0, BLOCK_W)
    if EVEN:
        return ww, tl.full((BLOCK_W,), 1, tl.int1)
    return ww, ww < hi


@triton.jit
def int4_weights(q_ptr, sz_ptr, rows_a, rows_b, r_ok, w0, hi, stride_w, sz_rows, one, TWO: tl.constexpr,
                 WPG: tl.constexpr, BLOCK_W: tl.constexpr, EVEN: tl.constexpr):
    ww, w_ok = step_words(w0, hi, BLOCK_W, EVEN)
    ok = r_ok[:, None] & w_ok[None, :]
    u_a, sz_a = word_tile(q_ptr, sz_ptr, rows_a, ok, ww, stride_w, sz_rows, one, WPG)
    u_b, sz_b = u_a, sz_a
    if TWO:
        u_b, sz_b = word_tile(q_ptr, sz_ptr, rows_b, ok, ww, stride_w, sz_rows, one, WPG)
    return u_a, sz_a, u_b, sz_b


@triton.jit
def int4_inputs(x_row, nw_ptr, w0, hi, dt: tl.constexpr, NORM: tl.constexpr, BLOCK_W: tl.constexpr,
                EVEN: tl.constexpr):
    # the inputs of a step's words' codes and (NORM) the norm's weights
    ww, w_ok = step_words(w0, hi, BLOCK_W, EVEN)
    k = ww * 8
    x0, x1 = load_pair(x_row, k, w_ok, 0, dt)
    x2, x3 = load_pair(x_row, k, w_ok, 2, dt)
    x4, x5 = load_pair(x_row, k, w_ok, 4, dt)
    x6, x7 = load_pair(x_row, k, w_ok, 6, dt)
    n0, n1, n2, n3, n4, n5, n6, n7 = x0, x1, x2, x3, x4, x5, x6, x7
    if NORM:
        n0, n1 = load_pair(nw_ptr, k, w_ok, 0, dt)
        n2, n3 = load_pair(nw_ptr, k, w_ok, 2, dt)
        n4, n5 = load_pair(nw_ptr, k, w_ok, 4, dt)
        n6, n7 = load_pair(nw_ptr, k, w_ok, 6, dt)
    return x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7


@triton.jit
def int4_loads(x_row, nw_ptr, q_ptr, sz_ptr, rows_a, rows_b, r_ok, w0, hi, stride_w, sz_rows, one, dt: tl.constexpr,
               NORM: tl.constexpr, TWO: tl.constexpr, WPG: tl.constexpr, BLOCK_W: tl.constexpr, EVEN: tl.constexpr):
    # One step's loads: words [w0, w0 + BLOCK_W) of the rows' codes and their scales, the inputs of their codes and
    # (NORM) the norm's weights, issued together: a step waits on memory once.
    u_a, sz_a, u_b, sz_b = int4_weights(q_ptr, sz_ptr, rows_a, rows_b, r_ok, w0, hi, stride_w, sz_rows, one, TWO, WPG,
                                        BLOCK_W, EVEN)
    x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7 = int4_inputs(x_row, nw_ptr, w0, hi, dt, NORM,
                                                                                 BLOCK_W, EVEN)
    return u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7


@triton.jit
def int4_step(acc_a, acc_b, u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7,
              rstd, dt: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr, PACK: tl.constexpr):
    # One step's products from `int4_loads`: each input normed (NORM) once for all of a thread's rows, each word's
    # codes multiplied in f16x2 (PACK) or as floats, each word's scale and zero applied once.
    PRECISE: tl.constexpr = dt == tl.float32
    if NORM:
        x0, x1 = rms_scaled(x0, n0, rstd, dt), rms_scaled(x1, n1, rstd, dt)
        x2, x3 = rms_scaled(x2, n2, rstd, dt), rms_scaled(x3, n3, rstd, dt)
        x4, x5 = rms_scaled(x4, n4, rstd, dt), rms_scaled(x5, n5, rstd, dt)
        x6, x7 = rms_scaled(x6, n6, rstd, dt), rms_scaled(x7, n7, rstd, dt)
    even = (x0 + x2) + (x4 + x6)
    odd = (x1 + x3) + (x5 + x7)
    xs = even + odd
    if PACK:
        xs = xs * X_SCALE
        x15 = f16_pair(x1 * X_SCALE, x5 * X_SCALE)
        x04 = f16_pair(x0 * X_SCALE, x4 * X_SCALE)
        x37 = f16_pair(x3 * X_SCALE, x7 * X_SCALE)
        x26 = f16_pair(x2 * X_SCALE, x6 * X_SCALE)
        acc_a = int4_packed(acc_a, u_a, sz_a, x15, x04, x37, x26, xs)
        if TWO:
            acc_b = int4_packed(acc_b, u_b, sz_b, x15, x04, x37, x26, xs)
    else:
        # sum(f * x) - ex = sum(q * x) - 8 * sum(x), f = 2**e + q (q when PRECISE)
        if PRECISE:
            ex = 8.0 * xs
        else:
            ex = 24.0 * even + 264.0 * odd
        acc_a = int4_words(acc_a, u_a, sz_a, x0, x1, x2, x3, x4, x5, x6, x7, ex, xs, PRECISE)
        if TWO:
            acc_b = int4_words(acc_b, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7, ex, xs, PRECISE)
    return acc_a, acc_b


@triton.jit
def int4_sums(x_row, nw_ptr, q_ptr, sz_ptr, rows_a, rows_b, r_ok, K, lo, hi, stride_w, sz_rows, one, eps,
              dt: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr,
              BLOCK_W: tl.constexpr, EVEN: tl.constexpr, STAGES: tl.constexpr, WHOLE: tl.constexpr,
              LONG: tl.constexpr, PDL: tl.constexpr, AHEAD: tl.constexpr):
    """As `float_sums` over compact int4 codes read as int32 words of 8 codes, words [lo, hi) BLOCK_W a row a
    step (`int4_loads`, `int4_step`). WHOLE (K <= 8 BLOCK_W): the RMS from the one step's own inputs. AHEAD: each
    step's codes load one step ahead, in registers."""
    WPG: tl.constexpr = GROUP // 8
    PACK: tl.constexpr = PACKED and dt != tl.float32
    acc_a = tl.zeros((BLOCK_R, BLOCK_W), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R, BLOCK_W), dtype=tl.float32)
    u_a, sz_a, u_b, sz_b = int4_weights(q_ptr, sz_ptr, rows_a, rows_b, r_ok, lo, hi, stride_w, sz_rows, one, TWO, WPG,
                                        BLOCK_W, EVEN)
    prior_done(PDL)
    x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7 = int4_inputs(x_row, nw_ptr, lo, hi, dt, NORM,
                                                                                 BLOCK_W, EVEN)
    rstd = 1.0
    if NORM:
        if WHOLE:
            rstd = rsqrt_mean(((x0 * x0 + x1 * x1) + (x2 * x2 + x3 * x3))
                              + ((x4 * x4 + x5 * x5) + (x6 * x6 + x7 * x7)), K, eps)
        else:
            rstd = inv_rms(x_row, K, eps, NORM_BLOCK, LONG)    # while the first step's loads are in flight
    if AHEAD:
        # The next step's codes and scales load before this step's arithmetic, and its inputs after (from L2,
        # a shorter trip): a step's loads are in flight while the step before it multiplies.
        for w0 in tl.range(lo + BLOCK_W, hi, BLOCK_W, num_stages=1):
            v_a, vz_a, v_b, vz_b = int4_weights(q_ptr, sz_ptr, rows_a, rows_b, r_ok, w0, hi, stride_w, sz_rows, one,
                                                TWO, WPG, BLOCK_W, EVEN)
            acc_a, acc_b = int4_step(acc_a, acc_b, u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7,
                                     n0, n1, n2, n3, n4, n5, n6, n7, rstd, dt, NORM, TWO, PACK)
            u_a, sz_a, u_b, sz_b = v_a, vz_a, v_b, vz_b
            x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7 = int4_inputs(x_row, nw_ptr, w0, hi, dt,
                                                                                         NORM, BLOCK_W, EVEN)
        acc_a, acc_b = int4_step(acc_a, acc_b, u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7,
                                 n0, n1, n2, n3, n4, n5, n6, n7, rstd, dt, NORM, TWO, PACK)
    else:
        acc_a, acc_b = int4_step(acc_a, acc_b, u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7,
                                 n0, n1, n2, n3, n4, n5, n6, n7, rstd, dt, NORM, TWO, PACK)
        for w0 in tl.range(lo + BLOCK_W, hi, BLOCK_W, num_stages=STAGES):
            u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7, n0, n1, n2, n3, n4, n5, n6, n7 = int4_loads(
                x_row, nw_ptr, q_ptr, sz_ptr, rows_a, rows_b, r_ok, w0, hi, stride_w, sz_rows, one, dt, NORM, TWO,
                WPG, BLOCK_W, EVEN)
            acc_a, acc_b = int4_step(acc_a, acc_b, u_a, sz_a, u_b, sz_b, x0, x1, x2, x3, x4, x5, x6, x7,
                                     n0, n1, n2, n3, n4, n5, n6, n7, rstd, dt, NORM, TWO, PACK)
    if PACK:
        return tl.sum(acc_a, axis=1) * (1.0 / X_SCALE), tl.sum(acc_b, axis=1) * (1.0 / X_SCALE)
    return tl.sum(acc_a, axis=1), tl.sum(acc_b, axis=1)


@triton.jit
def proj_out(y, up, y_ptr, r_ptr, rn, n_ok, b, stride_y, stride_r, dt: tl.constexpr, GATED: tl.constexpr,
             RESIDUAL: tl.constexpr):
    y = rnd(y, dt)
    if GATED:
        y = rnd(rnd(y * tl.sigmoid(y), dt) * rnd(up, dt), dt)
    if RESIDUAL:
        y = rnd(y + tl.load(r_ptr + b * stride_r + rn, mask=n_ok, other=0.0).to(tl.float32), dt)
    tl.store(y_ptr + b * stride_y + rn, y.to(dt), mask=n_ok)


@triton.jit
def part_sums(x_row, nw_ptr, w_ptr, sz_ptr, rows_a, rows_b, r_ok, K, s, stride_w, sz_rows, one, eps,
              dt: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr, INT4: tl.constexpr, GROUP: tl.constexpr,
              BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr, EVEN: tl.constexpr,
              STAGES: tl.constexpr, WHOLE: tl.constexpr, LONG: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr,
              AHEAD: tl.constexpr):
    """`int4_sums` or `float_sums` over part s of SPLIT parts of the row, in whole steps (`split_k` divides them):
    int32 words of codes, or features."""
    STEP: tl.constexpr = BLOCK_W if INT4 else BLOCK_K
    total = K // 8 if INT4 else K
    per = tl.cdiv(total, STEP * SPLIT) * STEP
    lo = s * per
    hi = tl.minimum(lo + per, total)
    if INT4:
        a, b = int4_sums(x_row, nw_ptr, w_ptr, sz_ptr, rows_a, rows_b, r_ok, K, lo, hi, stride_w, sz_rows, one, eps,
                         dt, NORM, TWO, GROUP, BLOCK_R, BLOCK_W, EVEN, STAGES, WHOLE, LONG, PDL, AHEAD)
    else:
        a, b = float_sums(x_row, nw_ptr, w_ptr, rows_a, rows_b, r_ok, K, lo, hi, stride_w, eps, dt, NORM, TWO,
                          BLOCK_R, BLOCK_K, STAGES, WHOLE, LONG, PDL)
    return a, b


@triton.jit
def merged_parts(a, b, part_ptr, count_ptr, ok, s, stride_part, second, SPLIT: tl.constexpr, TWO: tl.constexpr):
    """A split's merge: stores this part's float32 sums (`part_ptr`: the block's rows in part 0, parts
    `stride_part` apart; TWO: the second sums `second` further on) and counts it finished. The block's last part
    gets every part's sums added in order (the same sums whatever the finishing order) and True, and resets the
    count for the next launch; the others get their own sums and False."""
    tl.store(part_ptr + s * stride_part, a, mask=ok)
    if TWO:
        tl.store(part_ptr + s * stride_part + second, b, mask=ok)
    last = last_to_finish(count_ptr, SPLIT)
    if last:
        a = tl.zeros_like(a)
        b = tl.zeros_like(b)
        for i in tl.static_range(SPLIT):
            # from L2 (".cg"): other SMs wrote the parts
            a += tl.load(part_ptr + i * stride_part, mask=ok, other=0.0, cache_modifier=".cg")
            if TWO:
                b += tl.load(part_ptr + i * stride_part + second, mask=ok, other=0.0, cache_modifier=".cg")
        tl.atomic_xchg(count_ptr, 0)
    return a, b, last


@triton.jit
def proj_body(x_ptr, w_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, part_ptr, count_ptr, N, K, stride_x, stride_w, stride_y,
              stride_r, sz_rows, one, eps, NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr,
              INT4: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              BLOCK_W: tl.constexpr, EVEN: tl.constexpr, STAGES: tl.constexpr, WHOLE: tl.constexpr,
              LONG: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr, AHEAD: tl.constexpr):
    # Program (block of BLOCK_N rows x SPLIT parts of K, batch row). SPLIT > 1: each part writes its float32 sums
    # to `part` (GATED: its gate sums, then its up sums, 2N a part); the block's last part to finish adds them up in
    # order (the same sums whatever the finishing order) and applies the epilogue.
    pid, b = tl.program_id(0), tl.program_id(1)
    dt: tl.constexpr = y_ptr.dtype.element_ty
    blk, s = pid // SPLIT, pid % SPLIT
    rn = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    x_row = x_ptr + b * stride_x
    # GATED: the up rows sit N rows below the gate rows
    y, up = part_sums(x_row, nw_ptr, w_ptr, sz_ptr, rn, rn + N, n_ok, K, s, stride_w, sz_rows, one, eps, dt, NORM,
                      GATED, INT4, GROUP, BLOCK_N, BLOCK_K, BLOCK_W, EVEN, STAGES, WHOLE, LONG, SPLIT, PDL, AHEAD)
    if SPLIT == 1:
        proj_out(y, up, y_ptr, r_ptr, rn, n_ok, b, stride_y, stride_r, dt, GATED, RESIDUAL)
    else:
        WIDTH: tl.constexpr = 2 if GATED else 1
        y, up, last = merged_parts(y, up, part_ptr + b * SPLIT * WIDTH * N + rn,
                                   count_ptr + b * tl.cdiv(N, BLOCK_N) + blk, n_ok, s, WIDTH * N, N, SPLIT, GATED)
        if last:
            proj_out(y, up, y_ptr, r_ptr, rn, n_ok, b, stride_y, stride_r, dt, GATED, RESIDUAL)


@triton.autotune(configs=_configs(("BLOCK_N", "BLOCK_K", "STAGES", "SPLIT"), PROJ, PROJ_ONE),
                 key=["N", "K", "NORM", "GATED", "RESIDUAL", "SPLITS", "BATCH"], **TUNING)
@triton.heuristics({"WHOLE": whole_row, "LONG": long_row, "SPLIT": split_k})
@triton.jit(do_not_specialize=["BATCH"])
def proj(x_ptr, w_ptr, y_ptr, r_ptr, nw_ptr, part_ptr, count_ptr, N, K, stride_x, stride_w, stride_y, stride_r, eps,
         SPLITS, BATCH, NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr,
         BLOCK_K: tl.constexpr, STAGES: tl.constexpr, SPLIT: tl.constexpr, WHOLE: tl.constexpr,
         LONG: tl.constexpr, PDL: tl.constexpr):
    proj_body(x_ptr, w_ptr, w_ptr, y_ptr, r_ptr, nw_ptr, part_ptr, count_ptr, N, K, stride_x, stride_w, stride_y,
              stride_r, 0, 1, eps, NORM, GATED, RESIDUAL, False, 8, BLOCK_N, BLOCK_K, 1, True, STAGES, WHOLE, LONG,
              SPLIT, PDL, False)


@triton.autotune(configs=_configs(("BLOCK_N", "BLOCK_W", "STAGES", "SPLIT", "AHEAD"), PROJ_INT4, PROJ_INT4_ONE),
                 key=["N", "K", "GROUP", "NORM", "GATED", "RESIDUAL", "SPLITS", "BATCH"], **TUNING)
@triton.heuristics({"EVEN": even_words, "WHOLE": whole_words, "LONG": long_row, "SPLIT": split_k})
@triton.jit(do_not_specialize=["one", "BATCH"])
def proj_int4(x_ptr, q_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, part_ptr, count_ptr, N, K, stride_x, stride_w, stride_y,
              stride_r, sz_rows, one, eps, SPLITS, BATCH, NORM: tl.constexpr, GATED: tl.constexpr,
              RESIDUAL: tl.constexpr, GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr,
              STAGES: tl.constexpr, SPLIT: tl.constexpr, AHEAD: tl.constexpr, EVEN: tl.constexpr, WHOLE: tl.constexpr,
              LONG: tl.constexpr, PDL: tl.constexpr):
    proj_body(x_ptr, q_ptr, sz_ptr, y_ptr, r_ptr, nw_ptr, part_ptr, count_ptr, N, K, stride_x, stride_w, stride_y,
              stride_r, sz_rows, one, eps, NORM, GATED, RESIDUAL, True, GROUP, BLOCK_N, 16, BLOCK_W, EVEN, STAGES,
              WHOLE, LONG, SPLIT, PDL, AHEAD)


@triton.jit
def rope_out(y1, y2, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr, q_ptr, kc_ptr, vc_ptr, head, j,
             j_ok, rows, b, stride_q, stride_cb, stride_ch, stride_cl, dt: tl.constexpr, HEADS: tl.constexpr,
             KV_HEADS: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr):
    # The pairs' sums plus the bias, rotated at the row's position: q to its buffer, k and v to the cache's slot.
    HALF: tl.constexpr = D // 2
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


@triton.jit
def qkv_rope_body(x_ptr, nw_ptr, w_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, part_ptr, count_ptr, K, stride_x, stride_w, sz_rows, one, stride_q,
                  stride_cb, stride_ch, stride_cl, eps, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr,
                  HAS_BIAS: tl.constexpr, INT4: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr, EVEN: tl.constexpr, STAGES: tl.constexpr,
                  WHOLE: tl.constexpr, LONG: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr,
                  AHEAD: tl.constexpr):
    # Program (block of BLOCK_R rotary pairs of one head x SPLIT parts of K, batch row): rows j and j + D/2, which
    # rotary mixes. SPLIT > 1: as `proj_body`, each part writes both rows' float32 sums to `part` (a part holds
    # every row of q/k/v) and the block's last part to finish adds them up in order and applies the epilogue.
    pid, b = tl.program_id(0), tl.program_id(1)
    dt: tl.constexpr = q_ptr.dtype.element_ty
    HALF: tl.constexpr = D // 2
    ROWS: tl.constexpr = (HEADS + 2 * KV_HEADS) * D
    blk, s = pid // SPLIT, pid % SPLIT
    per_head = tl.cdiv(HALF, BLOCK_R)
    head = blk // per_head
    j = (blk % per_head) * BLOCK_R + tl.arange(0, BLOCK_R)
    j_ok = j < HALF
    rows = head * D + j
    x_row = x_ptr + b * stride_x
    y1, y2 = part_sums(x_row, nw_ptr, w_ptr, sz_ptr, rows, rows + HALF, j_ok, K, s, stride_w, sz_rows, one, eps, dt,
                       True, True, INT4, GROUP, BLOCK_R, BLOCK_K, BLOCK_W, EVEN, STAGES, WHOLE, LONG, SPLIT, PDL,
                       AHEAD)
    if SPLIT == 1:
        rope_out(y1, y2, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr, q_ptr, kc_ptr, vc_ptr, head,
                 j, j_ok, rows, b, stride_q, stride_cb, stride_ch, stride_cl, dt, HEADS, KV_HEADS, D, HAS_BIAS,
                 BLOCK_R)
    else:
        y1, y2, last = merged_parts(y1, y2, part_ptr + b * SPLIT * ROWS + rows,
                                    count_ptr + b * (HEADS + 2 * KV_HEADS) * per_head + blk, j_ok, s, ROWS, HALF,
                                    SPLIT, True)
        if last:
            rope_out(y1, y2, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr, q_ptr, kc_ptr, vc_ptr,
                     head, j, j_ok, rows, b, stride_q, stride_cb, stride_ch, stride_cl, dt, HEADS, KV_HEADS, D,
                     HAS_BIAS, BLOCK_R)


@triton.autotune(configs=_configs(("BLOCK_R", "BLOCK_K", "STAGES", "SPLIT"), ROPE, ROPE_ONE),
                 key=["K", "HEADS", "KV_HEADS", "D", "SPLITS", "BATCH"], **TUNING)
@triton.heuristics({"WHOLE": whole_row, "LONG": long_row, "SPLIT": split_k})
@triton.jit(do_not_specialize=["BATCH"])
def qkv_rope(x_ptr, nw_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
             q_ptr, kc_ptr, vc_ptr, part_ptr, count_ptr, K, stride_x, stride_w, stride_q, stride_cb, stride_ch,
             stride_cl, eps, SPLITS, BATCH, HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr,
             HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
             SPLIT: tl.constexpr, WHOLE: tl.constexpr, LONG: tl.constexpr, PDL: tl.constexpr):
    qkv_rope_body(x_ptr, nw_ptr, w_ptr, w_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, part_ptr, count_ptr, K, stride_x, stride_w, 0, 1, stride_q, stride_cb,
                  stride_ch, stride_cl, eps, HEADS, KV_HEADS, D, HAS_BIAS, False, 8, BLOCK_R, BLOCK_K, 1, True,
                  STAGES, WHOLE, LONG, SPLIT, PDL, False)


@triton.autotune(configs=_configs(("BLOCK_R", "BLOCK_W", "STAGES", "SPLIT", "AHEAD"), ROPE_INT4, ROPE_INT4_ONE),
                 key=["K", "GROUP", "HEADS", "KV_HEADS", "D", "SPLITS", "BATCH"], **TUNING)
@triton.heuristics({"EVEN": even_words, "WHOLE": whole_words, "LONG": long_row, "SPLIT": split_k})
@triton.jit(do_not_specialize=["one", "BATCH"])
def qkv_rope_int4(x_ptr, nw_ptr, q_codes_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, part_ptr, count_ptr, K, stride_x, stride_w, sz_rows, one, stride_q,
                  stride_cb, stride_ch, stride_cl, eps, SPLITS, BATCH, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                  D: tl.constexpr, HAS_BIAS: tl.constexpr, GROUP: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_W: tl.constexpr, EVEN: tl.constexpr, STAGES: tl.constexpr, SPLIT: tl.constexpr,
                  AHEAD: tl.constexpr, WHOLE: tl.constexpr, LONG: tl.constexpr, PDL: tl.constexpr):
    qkv_rope_body(x_ptr, nw_ptr, q_codes_ptr, sz_ptr, bias_ptr, cos_ptr, sin_ptr, last_pos_ptr, step_ptr, start_ptr,
                  q_ptr, kc_ptr, vc_ptr, part_ptr, count_ptr, K, stride_x, stride_w, sz_rows, one, stride_q,
                  stride_cb, stride_ch, stride_cl, eps, HEADS, KV_HEADS, D, HAS_BIAS, True, GROUP, BLOCK_R, 16,
                  BLOCK_W, EVEN, STAGES, WHOLE, LONG, SPLIT, PDL, AHEAD)


@triton.jit
def slot_tile(valid_row, base, stride_cl, d, l0, hi, start, BLOCK_L: tl.constexpr):
    # cache slots [l0, l0 + BLOCK_L) before `hi`: which lie in range, which the step may see (a prompt token, or
    # one generated since `start`), and their keys' and values' offsets
    slots = l0 + tl.arange(0, BLOCK_L)
    ok = slots < hi
    prompt = tl.load(valid_row + slots, mask=ok, other=0)
    return slots, ok, ok & ((prompt != 0) | (slots >= start)), base + slots[:, None] * stride_cl + d[None, :]


@triton.jit
def attend_tile(q, k, v, visible, scale, m_i, l_i, acc):
    # online softmax over one tile of cache slots: the running max, sum of weights and weighted values
    sc = tl.where(visible, tl.sum(k.to(tl.float32) * q[None, :], axis=1) * scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(sc, axis=0))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(sc - m_new)
    acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
    return m_new, l_i * alpha + tl.sum(p, axis=0), acc


@triton.autotune(configs=_configs(("SPLIT_L", "BLOCK_L"), ATTEND, ATTEND_ONE),
                 key=["L", "HEADS", "KV_HEADS", "D", "BATCH"], **TUNING)
@triton.jit(do_not_specialize=["BATCH"])
def attend(q_ptr, kc_ptr, vc_ptr, valid_ptr, step_ptr, start_ptr, o_ptr, part_ptr, count_ptr, L, splits_max, scale,
           stride_q, stride_cb, stride_ch, stride_cl, stride_valid, BATCH,
           HEADS: tl.constexpr, KV_HEADS: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
           SPLIT_L: tl.constexpr, BLOCK_L: tl.constexpr, PDL: tl.constexpr):
    # Program (h, s, b): query head h of row b over cache slots [s * SPLIT_L, (s + 1) * SPLIT_L), so a step's
    # attention runs on heads x splits programs, not one serial walk a head. Each writes its share (running max,
    # sum of weights, weighted values) to `part`; the last of a head's programs to finish merges the shares.
    h, s, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    dt: tl.constexpr = o_ptr.dtype.element_ty
    W: tl.constexpr = D + 2                         # a share: D weighted values, the max, the sum
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    kv = h // (HEADS // KV_HEADS)
    # The kernel before (qkv_rope) writes q and this step's slot of the caches, nothing else this kernel reads: the
    # positions, the prompt's mask and the earlier slots of the program's first tile load before the wait (PDL),
    # while that kernel finishes. Cache slots load from L2 (".cg"): an SM's L1 may hold a line of this step's slot
    # from before qkv_rope wrote it.
    start = tl.load(start_ptr)
    seen = start + tl.load(step_ptr) + 1            # the cache's slots up to this step's
    now = seen - 1                                  # this step's slot
    base = b * stride_cb + kv * stride_ch
    lo = s * SPLIT_L
    hi = tl.minimum(lo + SPLIT_L, seen)
    valid_row = valid_ptr + b * stride_valid
    cols, in_range, visible, tile = slot_tile(valid_row, base, stride_cl, d, lo, hi, start, BLOCK_L)
    earlier = (in_range & (cols != now))[:, None] & d_ok[None, :]
    k = tl.load(kc_ptr + tile, mask=earlier, other=0.0, cache_modifier=".cg")
    v = tl.load(vc_ptr + tile, mask=earlier, other=0.0, cache_modifier=".cg")
    prior_done(PDL)
    q = tl.load(q_ptr + b * stride_q + h * D + d, mask=d_ok, other=0.0).to(tl.float32)
    this = (cols == now)[:, None] & d_ok[None, :]
    k = tl.where(this, tl.load(kc_ptr + tile, mask=this, other=0.0, cache_modifier=".cg"), k)
    v = tl.where(this, tl.load(vc_ptr + tile, mask=this, other=0.0, cache_modifier=".cg"), v)
    m_i = tl.max(tl.full((BLOCK_L,), -1e30, tl.float32), axis=0)
    l_i = tl.sum(tl.zeros((BLOCK_L,), tl.float32), axis=0)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    m_i, l_i, acc = attend_tile(q, k, v, visible, scale, m_i, l_i, acc)
    for l0 in range(lo + BLOCK_L, hi, BLOCK_L):    # the rest of the program's slots, after the wait
        _, ok, seen_here, at = slot_tile(valid_row, base, stride_cl, d, l0, hi, start, BLOCK_L)
        k = tl.load(kc_ptr + at, mask=ok[:, None] & d_ok[None, :], other=0.0, cache_modifier=".cg")
        v = tl.load(vc_ptr + at, mask=ok[:, None] & d_ok[None, :], other=0.0, cache_modifier=".cg")
        m_i, l_i, acc = attend_tile(q, k, v, seen_here, scale, m_i, l_i, acc)
    if tl.num_programs(1) == 1:                     # the whole cache in one program: nothing to merge
        tl.store(o_ptr + b * stride_q + h * D + d, (acc / l_i).to(dt), mask=d_ok)
    else:
        head = (b * HEADS + h) * splits_max
        if lo < seen:                                   # splits past the step's slot hold nothing
            share = part_ptr + (head + s) * W
            tl.store(share + d, acc, mask=d_ok)
            tl.store(share + D, m_i)
            tl.store(share + D + 1, l_i)
        if last_to_finish(count_ptr + b * HEADS + h, tl.num_programs(1)):
            # All shares at once (SHARES a load): the merge costs one round trip to L2, not one a share.
            used = tl.cdiv(seen, SPLIT_L)
            j = tl.arange(0, SHARES)
            m_all = tl.max(tl.full((SHARES,), -1e30, tl.float32), axis=0)
            l_all = tl.sum(tl.zeros((SHARES,), tl.float32), axis=0)
            out = tl.zeros((BLOCK_D,), dtype=tl.float32)
            for j0 in range(0, used, SHARES):
                j_ok = j0 + j < used
                share = part_ptr + (head + j0 + j) * W
                # from L2 (".cg"): other SMs wrote the shares
                m_j = tl.load(share + D, mask=j_ok, other=-1e30, cache_modifier=".cg")
                l_j = tl.load(share + D + 1, mask=j_ok, other=0.0, cache_modifier=".cg")
                a_j = tl.load(share[:, None] + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0,
                              cache_modifier=".cg")
                m_new = tl.maximum(m_all, tl.max(m_j, axis=0))
                c_j = tl.exp(m_j - m_new)
                a = tl.exp(m_all - m_new)
                out = out * a + tl.sum(a_j * c_j[:, None], axis=0)
                l_all = l_all * a + tl.sum(l_j * c_j, axis=0)
                m_all = m_new
            tl.store(o_ptr + b * stride_q + h * D + d, (out / l_all).to(dt), mask=d_ok)
            tl.atomic_xchg(count_ptr + b * HEADS + h, 0)            # ready for the next launch


@triton.jit
def embed_int4(token_ptr, q_ptr, sz_ptr, out_ptr, K, stride_w, sz_rows, stride_o, GROUP: tl.constexpr,
               BLOCK_W: tl.constexpr, PDL: tl.constexpr):
    # Row `token` of an int4 token table, dequantized as `int4.dequantize` does and rounded to bf16 as the table's
    # lookup returns it: program (block of BLOCK_W words, batch row). (q - 8) * scale is exact in float32, so one
    # rounding of the sum follows torch's two.
    pid, b = tl.program_id(0), tl.program_id(1)
    prior_done(PDL)
    t = tl.load(token_ptr + b)
    ww = pid * BLOCK_W + tl.arange(0, BLOCK_W)
    ok = ww < K // 8
    u = tl.load(q_ptr + t * stride_w + ww, mask=ok, other=0)
    sz = tl.load(sz_ptr + (ww // (GROUP // 8)) * sz_rows + t, mask=ok, other=0)
    c = tl.arange(0, 8)
    q = ((u[:, None] >> (8 * (c // 2) + 4 * (1 - c % 2))[None, :]) & 15).to(tl.float32)
    w = (q - 8.0) * pair_lo(sz)[:, None] + pair_hi(sz)[:, None]
    tl.store(out_ptr + b * stride_o + (ww * 8)[:, None] + c[None, :],
             w.to(tl.bfloat16).to(out_ptr.dtype.element_ty), mask=ok[:, None])


@triton.jit
def argmax(x_ptr, key_ptr, count_ptr, token_ptr, N, stride_x, BLOCK: tl.constexpr, PDL: tl.constexpr):
    # Program (p, b): the largest of its BLOCK logits of row b as one int64 key that orders by value, then by the
    # lower index (torch.argmax's first maximum): the float's bits made to order as integers, above the index's
    # complement. An atomic max gathers the row's key; the row's last program turns it into the token and resets
    # the key and the count, so a graph can replay the launch.
    p, b = tl.program_id(0), tl.program_id(1)
    prior_done(PDL)
    i = p * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + b * stride_x + i, mask=i < N, other=float("-inf")).to(tl.float32)
    bits = v.to(tl.int32, bitcast=True)
    order = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)       # negative floats: larger magnitude, smaller key
    key = (order.to(tl.int64) << 32) | (4294967295 - i.to(tl.int64))
    key = tl.where(i < N, key, KEY_MIN)
    tl.atomic_max(key_ptr + b, tl.max(key, axis=0), sem="relaxed", scope="gpu")
    if last_to_finish(count_ptr + b, tl.num_programs(0)):
        best = tl.atomic_xchg(key_ptr + b, KEY_MIN, sem="acq_rel", scope="gpu")
        tl.store(token_ptr + b, 4294967295 - (best & 4294967295))
        tl.atomic_xchg(count_ptr + b, 0)
