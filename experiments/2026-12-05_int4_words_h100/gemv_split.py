import triton
import triton.language as tl


@triton.jit
def bf16_lo(v):  # the low bf16 of a 32-bit pair, as float32
    return (v << 16).to(tl.float32, bitcast=True)


@triton.jit
def bf16_hi(v):
    return (v & -65536).to(tl.float32, bitcast=True)


@triton.jit(do_not_specialize=["one"])
def gemv_w(x_ptr, q_ptr, sz_ptr, y_ptr, N, KW, rows, one, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
           BLOCK_W: tl.constexpr, EVEN: tl.constexpr, SPLIT: tl.constexpr = 1):
    # x_ptr: int32 view of bf16 x (pairs); q_ptr: int32 words of 8 codes; sz_ptr: int32 view of (scale, zero) bf16 pairs
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    WPG: tl.constexpr = GROUP // 8
    w = tl.arange(0, BLOCK_W)
    acc = tl.zeros((BLOCK_N, BLOCK_W), tl.float32)
    per = KW // SPLIT
    for w0 in range(pid_k * per, pid_k * per + per, BLOCK_W):
        ww = w0 + w
        if EVEN:
            w_ok = tl.full((BLOCK_W,), 1, tl.int1)
        else:
            w_ok = ww < KW
        ok = n_ok[:, None] & w_ok[None, :]
        u = tl.load(q_ptr + rn[:, None] * KW + ww[None, :], mask=ok, other=0)
        # x of the word's 8 codes: four bf16 pairs; codes at bits 4,0 | 12,8 | 20,16 | 28,24
        x01 = tl.load(x_ptr + ww * 4, mask=w_ok, other=0)
        x23 = tl.load(x_ptr + ww * 4 + 1, mask=w_ok, other=0)
        x45 = tl.load(x_ptr + ww * 4 + 2, mask=w_ok, other=0)
        x67 = tl.load(x_ptr + ww * 4 + 3, mask=w_ok, other=0)
        x0, x1, x2, x3 = bf16_lo(x01), bf16_hi(x01), bf16_lo(x23), bf16_hi(x23)
        x4, x5, x6, x7 = bf16_lo(x45), bf16_hi(x45), bf16_lo(x67), bf16_hi(x67)
        xs = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
        # codes placed in the top mantissa bits (19..22: 1 + q/16) or 15..18 (1 + q/256) of a float near 1;
        # x scaled to match, so sum(f * x') = sum(q * x) + sum(x')
        xe = (x1 + x3 + x5 + x7) * 256.0 + (x0 + x2 + x4 + x6) * 16.0
        y_w = xe + 8.0 * xs
        a = u << 15      # bits 0..3 -> 15, 4..7 -> 19
        b = u << 7       # 8..11 -> 15, 12..15 -> 19
        c = u >> 1       # 16..19 -> 15, 20..23 -> 19 (arithmetic shift: the sign bits land above bit 22)
        d = u >> 9       # 24..27 -> 15, 28..31 -> 19
        LO: tl.constexpr = 0x00078000
        HI: tl.constexpr = 0x00780000
        ONE: tl.constexpr = 0x3F800000
        p = ((a & HI) | ONE).to(tl.float32, bitcast=True) * (x0 * 16.0)[None, :] - y_w[None, :]
        p += ((a & LO) | ONE).to(tl.float32, bitcast=True) * (x1 * 256.0)[None, :]
        p += ((b & HI) | ONE).to(tl.float32, bitcast=True) * (x2 * 16.0)[None, :]
        p += ((b & LO) | ONE).to(tl.float32, bitcast=True) * (x3 * 256.0)[None, :]
        p += ((c & HI) | ONE).to(tl.float32, bitcast=True) * (x4 * 16.0)[None, :]
        p += ((c & LO) | ONE).to(tl.float32, bitcast=True) * (x5 * 256.0)[None, :]
        p += ((d & HI) | ONE).to(tl.float32, bitcast=True) * (x6 * 16.0)[None, :]
        p += ((d & LO) | ONE).to(tl.float32, bitcast=True) * (x7 * 256.0)[None, :]
        g = ww // WPG
        sz = tl.load(sz_ptr + g[None, :] * rows + rn[:, None] * one, mask=ok, other=0)
        # weight = (q - 8) * s + z: sum = s * (sum(q x)) + (z - 8 s) * xs = s * (p - xe - 8 xs) + z * xs
        acc += bf16_lo(sz) * p + bf16_hi(sz) * xs[None, :]
    y = tl.sum(acc, axis=1)
    if SPLIT == 1:
        tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=n_ok)
    else:
        tl.atomic_add(y_ptr + rn, y, mask=n_ok, sem="relaxed")
