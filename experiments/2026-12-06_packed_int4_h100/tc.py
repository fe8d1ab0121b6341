import triton
import triton.language as tl


@triton.jit
def pairs(u, s: tl.constexpr):
    # codes at bits s..s+3 and s+16..s+19 of each word as bf16 128 + q (exact): one mask-and-or for two codes
    v = ((u >> s) & 0x000F000F) | 0x43004300
    lo = (v & 0xFFFF).to(tl.int16).to(tl.bfloat16, bitcast=True)
    hi = (v >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    return lo, hi


@triton.jit
def gemv_tc(x_ptr, q_ptr, sz_ptr, y_ptr, N, K, stride_w, sz_rows, GROUP: tl.constexpr, BLOCK_N: tl.constexpr,
            STAGES: tl.constexpr, F32: tl.constexpr = False):
    # one group of GROUP inputs a step; W rows as the dot's B^T, x in row 0 of a 16-row A (rows 1-15 zero)
    pid = tl.program_id(0)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < N
    WPG: tl.constexpr = GROUP // 8
    wi = tl.arange(0, WPG)
    m = tl.arange(0, 16)
    # input order of the dequantized tile's columns: word w, slot j -> the code at bits (s, s+16) of pairs()
    # columns are [w, 8]: flattened index w*8 + j; j = 2*t + h for pair t (shift 4*t... ) h = lo/hi
    # code at bit position b of the word is input 8w + c with b = 8*(c//2) + 4*(1 - c%2)
    # pair t (shift 4t): lo = bits 4t (c = 2*(t//2) + 1 - t%2), hi = bits 4t + 16 (c + 4)
    j = tl.arange(0, 8)
    r = j % 4
    c = 2 * (r % 2) + 1 - r // 2 + 4 * (j // 4)      # the nested joins' order: l0 l2 l1 l3 h0 h2 h1 h3
    acc = tl.zeros((16, BLOCK_N), dtype=tl.float32)
    for g in tl.range(0, K // GROUP, num_stages=STAGES):
        ww = g * WPG + wi
        u = tl.load(q_ptr + rn[:, None] * stride_w + ww[None, :], mask=n_ok[:, None], other=0)   # [BLOCK_N, WPG]
        l0, h0 = pairs(u, 0)
        l1, h1 = pairs(u, 4)
        l2, h2 = pairs(u, 8)
        l3, h3 = pairs(u, 12)
        wq = tl.reshape(tl.join(tl.join(tl.join(l0, h0), tl.join(l1, h1)), tl.join(tl.join(l2, h2), tl.join(l3, h3))),
                        (BLOCK_N, GROUP))
        kk = (g * GROUP + wi * 8)[:, None] + c[None, :]                   # [WPG, 8] inputs in wq's column order
        kk = tl.reshape(kk, (GROUP,))
        xa = tl.load(x_ptr + kk[None, :] + m[:, None] * 0, mask=(m == 0)[:, None], other=0.0)   # [16, GROUP]
        if F32:   # the interpreter multiplies bf16 by its bits
            d = tl.dot(xa.to(tl.float32), tl.trans(wq.to(tl.float32)))
        else:
            d = tl.dot(xa, tl.trans(wq))                                         # sum x * (128 + q)
        xs = tl.sum(xa.to(tl.float32), axis=1)                               # row sums (row 0 real)
        sz = tl.load(sz_ptr + g * sz_rows + rn, mask=n_ok, other=0)
        s = (sz << 16).to(tl.float32, bitcast=True)
        z = (sz & -65536).to(tl.float32, bitcast=True)
        acc += s[None, :] * (d - 136.0 * xs[:, None]) + z[None, :] * xs[:, None]
    y = tl.sum(acc, axis=0)
    tl.store(y_ptr + rn, y.to(tl.bfloat16), mask=n_ok)
